"""Where the tests find real PostgreSQL and Redis, and whether they must be there."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

POSTGRES_URL = os.environ.get(
    "TOLLGATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TOLLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("TOLLGATE_TEST_REQUIRE_SERVICES") == "1"


def reachable(url: str, default_port: int) -> bool:
    """Whether a TCP connection to the URL's host and port succeeds within 2 seconds."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False
