"""Benchmarks: scripts that print a table and save a plot; never asserted in tests."""

from __future__ import annotations

import signal
import sys
from types import FrameType


def stop_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so a benchmark that is killed still stops the servers it
    started (its `with` blocks and `finally` clauses run) instead of leaving them running."""

    def leave(signum: int, frame: FrameType | None) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
