"""gRPC's client I/O manager for a gateway process, chosen before gRPC loads.

gRPC's client channels run on its EventEngine by default, which hands each read and write
between its own threads; with the experiment off they use gRPC's older I/O manager, which
does them on the calling and polling threads. For the gateway's many small messages to one
Triton that is about a tenth less CPU per request (docs/history.md). gRPC reads the variable
once, while it loads, so `load_grpc` sets it around that import and removes it again: the
processes the gateway starts (Triton) do not see it. A GRPC_EXPERIMENTS of the user's own is
left as it is. Entry points (`python -m gateway`, the benchmarks) call it first; importing
this module does nothing.
"""

from __future__ import annotations

import os
import sys

GRPC_EXPERIMENTS = "-event_engine_client"


def load_grpc() -> None:
    """Load gRPC with the setting above, unless it is loaded or the user chose their own."""
    if "grpc" in sys.modules or "GRPC_EXPERIMENTS" in os.environ:
        return
    os.environ["GRPC_EXPERIMENTS"] = GRPC_EXPERIMENTS
    try:
        import grpc  # noqa: F401, PLC0415
    finally:
        del os.environ["GRPC_EXPERIMENTS"]
