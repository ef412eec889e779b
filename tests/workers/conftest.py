"""Worker fixtures: the real tritonserver binary (cached under var/triton) and free ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from workers.binary import TritonInstall, ensure_tritonserver
from workers.config import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
TRITON_CACHE = ROOT / "var" / "triton"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def triton_install() -> TritonInstall:
    return ensure_tritonserver(TRITON_CACHE, WorkerSettings().triton_pytriton_version)


@pytest.fixture
def worker_settings(tmp_path: Path) -> WorkerSettings:
    return WorkerSettings(
        var_dir=tmp_path / "var",
        model_repository=tmp_path / "repo",
        triton_home=TRITON_CACHE,
        triton_http_port=free_port(),
        triton_grpc_port=free_port(),
        triton_metrics_port=free_port(),
        triton_exit_timeout_s=2,
        triton_ready_timeout_s=60,
    )
