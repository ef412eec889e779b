"""Tollgate gateway: the authenticated, rate-limited, versioned generation API."""

import os as _os
import sys as _sys

# gRPC's client channels run on its EventEngine by default, which hands each read and write
# between its own threads; with the experiment off they use gRPC's older I/O manager, which
# does them on the calling and polling threads. For the gateway's many small messages to one
# Triton that is about a tenth less CPU per request (README, "Benchmark (gateway)"). gRPC reads
# the variable once, while it loads, so it is set around that import and removed again: the
# processes the gateway starts (Triton) do not see it. A GRPC_EXPERIMENTS of the user's own is
# left as it is.
GRPC_EXPERIMENTS = "-event_engine_client"


def _load_grpc() -> None:
    if "grpc" in _sys.modules or "GRPC_EXPERIMENTS" in _os.environ:
        return
    _os.environ["GRPC_EXPERIMENTS"] = GRPC_EXPERIMENTS
    try:
        import grpc  # noqa: F401, PLC0415
    finally:
        del _os.environ["GRPC_EXPERIMENTS"]


_load_grpc()
