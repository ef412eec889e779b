"""Hosting settings: each part reads its own `TOLLGATE_*` variables, and the model
configuration carries the engine's settings to the worker."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from gateway.config import GatewaySettings
from hosting.config import (
    ArtifactChoice,
    DeviceChoice,
    EngineSettings,
    HostingSettings,
    TritonSettings,
)
from hosting.model_config import ENTRY_POINT, model_config
from workers import artifacts


def test_the_model_configuration_carries_lanes_threads_and_senders() -> None:
    engine = EngineSettings(lanes=3, threads=2, senders=4)
    config = model_config("gen", [1], engine, TritonSettings(exit_timeout_s=7))
    assert 'key: "lanes" value: { string_value: "3" }' in config
    assert 'key: "senders" value: { string_value: "4" }' in config
    assert 'key: "threads" value: { string_value: "2" }' in config
    assert 'key: "grace_s" value: { string_value: "7" }' in config


def test_the_choices_hosting_writes_are_the_ones_the_worker_reads() -> None:
    assert get_args(ArtifactChoice) == get_args(artifacts.ArtifactChoice)
    assert get_args(DeviceChoice) == get_args(artifacts.DeviceChoice)


def test_the_entry_point_is_the_workers_triton_entry() -> None:
    assert ENTRY_POINT.is_file()
    assert "from workers.triton_model import TritonPythonModel" in ENTRY_POINT.read_text()


def test_each_part_reads_its_own_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOLLGATE_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("TOLLGATE_TRITON_GRPC_PORT", "9101")
    monkeypatch.setenv("TOLLGATE_TRITON_EXIT_TIMEOUT_S", "3")
    monkeypatch.setenv("TOLLGATE_WORKER_MAX_ACTIVE", "5")
    monkeypatch.setenv("TOLLGATE_WORKER_ARTIFACT", "fp32")
    monkeypatch.setenv("TOLLGATE_PORT", "9200")
    for settings in (HostingSettings(), GatewaySettings()):
        assert settings.registry.var_dir == tmp_path.resolve()
        assert settings.triton.grpc_port == 9101
        assert settings.triton.exit_timeout_s == 3
        assert settings.engine.max_active == 5
        assert settings.engine.artifact == "fp32"
        assert settings.triton_path == tmp_path.resolve() / "triton"
    gateway = GatewaySettings()
    assert gateway.port == 9200
    assert gateway.endpoints == ["127.0.0.1:9101"]
    assert gateway.hosting.triton is gateway.triton


def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_WORKER_MAX_ACTIVE", "0")
    with pytest.raises(ValueError, match="max_active"):
        HostingSettings()
