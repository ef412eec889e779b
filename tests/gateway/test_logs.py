"""Log lines are JSON objects carrying the request id and the fields passed as extra."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.telemetry.logs import JsonFormatter, configure_logging, request_id_var


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


def _record(created: float, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("tollgate.test", logging.WARNING, "", 0, "said %s", ("hi",), None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    record.__dict__.update(extra)
    return record


def test_timestamps_are_utc_to_the_millisecond_and_each_second_is_its_own() -> None:
    formatter = JsonFormatter()
    first = json.loads(formatter.format(_record(1_764_868_000.25)))
    second = json.loads(formatter.format(_record(1_764_868_001.5)))
    again = json.loads(formatter.format(_record(1_764_868_000.999)))
    assert first["ts"] == "2025-12-04T17:06:40.250Z"
    assert second["ts"] == "2025-12-04T17:06:41.500Z"
    assert again["ts"] == "2025-12-04T17:06:40.999Z"
    assert (first["level"], first["message"]) == ("warning", "said hi")


def test_fields_json_cannot_hold_are_written_as_text_and_text_stays_text() -> None:
    line = JsonFormatter().format(
        _record(0.0, path=Path("/var/x"), ratio=0.5, note='naïve\n"quoted"', ids=[1, 2])
    )
    entry = json.loads(line)
    assert "\n" not in line, "one record, one line"
    assert (entry["path"], entry["ratio"], entry["note"], entry["ids"]) == (
        "/var/x",
        0.5,
        'naïve\n"quoted"',
        [1, 2],
    )


def test_an_exception_is_logged_with_its_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with _configured():
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("tollgate.test").exception("failed")
    entry = json.loads(capsys.readouterr().err.strip())
    assert entry["message"] == "failed"
    assert "ValueError: boom" in entry["error"]
    assert 'raise ValueError("boom")' in entry["error"]


def test_configured_logging_writes_json_lines_without_looking_up_callers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record)
        return True

    with _configured():
        logger = logging.getLogger("tollgate.test")
        logger.addFilter(keep)
        try:
            logger.info("request", extra={"status": 200})
            logger.debug("not at info")
        finally:
            logger.filters.clear()
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["status"] for line in lines] == [200]
    # The caller, thread and process are not looked up for every record.
    record = seen[0]
    assert (record.funcName, record.threadName, record.processName) == (
        "(unknown function)",
        None,
        None,
    )


@contextmanager
def _configured() -> Iterator[None]:
    """`configure_logging` for one test; the logging module's settings restored after."""
    switches = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")
    saved = {name: getattr(logging, name) for name in switches}
    loggers = [logging.getLogger(name) for name in ("tollgate", "uvicorn.error")]
    kept = [(lg.handlers, lg.level, lg.propagate) for lg in loggers]
    configure_logging("info")
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(logging, name, value)
        for lg, (handlers, level, propagate) in zip(loggers, kept, strict=True):
            lg.handlers, lg.level, lg.propagate = handlers, level, propagate
