"""Hosting fixtures: settings for a Triton on free ports (the shared ones are in tests/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hosting.config import HostingSettings, TritonSettings
from registry.config import RegistrySettings
from tests.published import TRITON_CACHE, free_port


@pytest.fixture
def hosting_settings(tmp_path: Path) -> HostingSettings:
    return HostingSettings(
        registry=RegistrySettings(var_dir=tmp_path / "var", model_repository=tmp_path / "repo"),
        triton=TritonSettings(
            home=TRITON_CACHE,
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            exit_timeout_s=2,
            ready_timeout_s=60,
        ),
    )
