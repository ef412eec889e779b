"""Worker fixtures: settings for a Triton on free ports (the shared ones are in tests/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.published import TRITON_CACHE, free_port
from workers.config import WorkerSettings


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
