"""Hosting settings: where `tritonserver` comes from, how it listens, and the engine settings
it writes into each model's configuration.

Each part reads its own `TOLLGATE_*` variables: `TritonSettings` the `TOLLGATE_TRITON_*` ones,
`EngineSettings` the `TOLLGATE_WORKER_*` ones. `HostingSettings` composes them with the
registry's settings for `python -m hosting`; the gateway holds the same parts in its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.config import RegistrySettings

# The values the worker accepts for its `artifact` and `device` parameters
# (`workers.artifacts`; tests/hosting/test_config.py keeps the two lists equal).
ArtifactChoice = Literal["auto", "int8", "fp32", "tensorrt"]
DeviceChoice = Literal["auto", "cpu", "cuda"]


class TritonSettings(BaseSettings):
    """The `tritonserver` process: its release, addresses and timeouts."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_TRITON_", extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address Triton binds.")
    http_port: int = Field(default=8000, ge=1, le=65535, description="Triton HTTP port.")
    grpc_port: int = Field(default=8001, ge=1, le=65535, description="Triton gRPC port.")
    metrics_port: int = Field(
        default=8002, ge=1, le=65535, description="Triton Prometheus metrics port."
    )
    home: Path | None = Field(
        default=None,
        description="Where tritonserver is unpacked and logs go; default <var_dir>/triton.",
    )
    pytriton_version: str = Field(
        default="0.7.0", description="nvidia-pytriton wheel release that supplies tritonserver."
    )
    ready_timeout_s: float = Field(
        default=120.0, gt=0, description="Seconds to wait for Triton to report ready."
    )
    exit_timeout_s: int = Field(
        default=30,
        ge=0,
        description="Grace period for in-flight requests when Triton is asked to stop.",
    )

    def home_in(self, var_dir: Path) -> Path:
        """Where tritonserver lives: `home`, or `<var_dir>/triton`."""
        return (self.home or var_dir / "triton").expanduser().resolve()


class EngineSettings(BaseSettings):
    """The generate model's engine, passed to workers as model-configuration parameters."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_WORKER_", extra="forbid")

    artifact: ArtifactChoice = Field(
        default="auto",
        description="Artifact a worker serves: auto (fp32 on a GPU, INT8 on the CPU), int8 or "
        "fp32 (tensorrt is refused: workers run ONNX Runtime).",
    )
    device: DeviceChoice = Field(
        default="auto",
        description="Where ONNX Runtime runs the model: auto (CUDA where onnxruntime-gpu and a "
        "GPU are there, else CPU), cpu or cuda.",
    )
    max_active: int = Field(
        default=32, ge=1, description="Sequences decoded together (continuous batching slots)."
    )
    max_queue: int = Field(
        default=256, ge=0, description="Requests waiting for a slot; beyond it, 'overloaded'."
    )
    tokens_per_response: int = Field(
        default=8, ge=1, description="Tokens packed into one streamed response."
    )
    response_interval_ms: float = Field(
        default=20.0, ge=0, description="Send a streamed response at least this often (ms)."
    )
    responses_per_s: float = Field(
        default=500.0,
        ge=0,
        description="Streamed responses per second, all streams together: with N streams, "
        "each one's responses are at least N / this apart (packs grow under load; the first "
        "token still leaves at once); 0: no budget.",
    )
    senders: int = Field(
        default=3,
        ge=1,
        description="Threads handing responses to the server at the same time (each send "
        "waits for an IPC round trip; one request's responses never overlap).",
    )
    lanes: int = Field(
        default=0,
        ge=0,
        description="Sub-batches decoded at the same time, each on a thread of its own; 0: on "
        "a CPU one per core (at most one per 4 slots), on a GPU one.",
    )
    threads: int = Field(
        default=0,
        ge=0,
        description="ONNX Runtime threads per lane; 0: the cores shared out among the lanes "
        "(with one lane, ONNX Runtime chooses).",
    )


class HostingSettings(BaseSettings):
    """`python -m hosting`: the registry it reads, the server it runs, the engine it configures."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", extra="forbid")

    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)

    @property
    def triton_path(self) -> Path:
        return self.triton.home_in(self.registry.var_dir)
