"""Request ids the gateway makes: the format callers see, and no repeats."""

from __future__ import annotations

import re

from gateway.server.middleware import _new_id


def test_made_request_ids_are_32_hex_digits_and_do_not_repeat() -> None:
    ids = [_new_id() for _ in range(20000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
