"""Real parts shared by the worker and gateway tests: the tritonserver binary (cached under
var/triton), free ports, and a registry holding a really trained model."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from hosting.binary import TritonInstall, ensure_tritonserver
from hosting.config import HostingSettings, TritonSettings
from registry import aliases, migrate
from registry.config import RegistrySettings
from registry.db import connect, writing
from trainer.rundir import Run, RunSpec
from trainer.runs import (
    step_data,
    step_export,
    step_publish,
    step_quantize,
    step_train,
)

ROOT = Path(__file__).resolve().parents[1]
TRITON_CACHE = ROOT / "var" / "triton"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def on_free_ports(
    settings: HostingSettings,
    *,
    registry: dict[str, Any] | None = None,
    engine: dict[str, Any] | None = None,
    **triton: Any,
) -> HostingSettings:
    """`settings` for a Triton of a test's own: free HTTP, gRPC and metrics ports, and the
    changes given for each part (`triton`'s as keywords)."""
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    return HostingSettings(
        registry=settings.registry.model_copy(update=registry or {}),
        triton=settings.triton.model_copy(update={**ports, **triton}),
        engine=settings.engine.model_copy(update=engine or {}),
    )


@pytest.fixture(scope="session")
def triton_install() -> TritonInstall:
    return ensure_tritonserver(TRITON_CACHE, TritonSettings().pytriton_version)


PRESET = """
[data]
max_total_chars = 400000
val_fraction = 0.05
[tokenizer]
vocab_size = 512
[model]
context_length = 256
n_layer = 2
n_head = 2
n_embd = 64
[training]
batch_size = 16
max_steps = 80
learning_rate = 5e-3
min_learning_rate = 5e-4
warmup_steps = 10
eval_interval = 40
eval_batches = 2
checkpoint_interval = 40
precision = "fp32"
"""


@pytest.fixture(scope="session")
def published(tmp_path_factory: pytest.TempPathFactory) -> HostingSettings:
    """A registry and model repository holding two ready versions of a really trained model."""
    root = tmp_path_factory.mktemp("published")
    (root / "preset.toml").write_text(PRESET)
    settings = HostingSettings(
        registry=RegistrySettings(var_dir=root / "var", model_repository=root / "repo"),
        triton=TritonSettings(home=TRITON_CACHE),
    )
    db = connect(settings.registry)
    migrate.upgrade(db)
    console = Console(file=io.StringIO())
    run = Run.create(
        root / "run",
        RunSpec(model="gen", preset=str(root / "preset.toml"), preset_config={}, inputs=None),
    )
    step_data(run, console)
    step_train(run, console, device="cpu")
    step_export(run, console)
    step_quantize(run, console)
    for _ in range(2):
        step_publish(run, console, db=db, repository=settings.registry.model_repository)
    with writing(db) as session:
        aliases.set_alias(
            session=session,
            model="gen",
            alias="production",
            version=1,
            actor="test",
            reason="serve",
        )
    db.dispose()
    return settings
