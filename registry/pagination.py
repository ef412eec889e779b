"""Bounded, keyset-paginated listings: every list has an order, a limit and a cursor."""

from __future__ import annotations

from registry.errors import InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def int_cursor(cursor: str | None) -> int | None:
    """Decode a cursor that carries an integer key (a version number or an event id)."""
    if cursor is None:
        return None
    if not cursor.isdigit():
        raise InvalidInput(f"invalid page cursor {cursor!r}")
    return int(cursor)
