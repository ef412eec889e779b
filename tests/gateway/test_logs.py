"""Log lines are JSON objects carrying the request id and the fields passed as extra."""

from __future__ import annotations

import json
import logging

from gateway.logs import JsonFormatter, request_id_var


def test_a_log_line_is_one_json_object_with_the_request_id() -> None:
    record = logging.LogRecord(
        "tollgate.gateway.access", logging.INFO, "", 0, "request", None, None
    )
    record.status = 200
    record.color_message = "\x1b[36mrequest\x1b[0m"
    token = request_id_var.set("req-7")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    entry = json.loads(line)
    assert entry["request_id"] == "req-7"
    assert (entry["level"], entry["logger"], entry["message"], entry["status"]) == (
        "info",
        "tollgate.gateway.access",
        "request",
        200,
    )
    assert "color_message" not in entry
