"""Worker settings: where the local Triton server comes from and how it listens."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from registry.config import RegistrySettings
from workers.artifacts import ArtifactChoice, DeviceChoice


class WorkerSettings(RegistrySettings):
    """The local `tritonserver` process; registry settings are inherited."""

    triton_host: str = Field(default="127.0.0.1", description="Address Triton binds.")
    triton_http_port: int = Field(default=8000, ge=1, le=65535, description="Triton HTTP port.")
    triton_grpc_port: int = Field(default=8001, ge=1, le=65535, description="Triton gRPC port.")
    triton_metrics_port: int = Field(
        default=8002, ge=1, le=65535, description="Triton Prometheus metrics port."
    )
    triton_home: Path | None = Field(
        default=None,
        description="Where tritonserver is unpacked and logs go; default <var_dir>/triton.",
    )
    triton_pytriton_version: str = Field(
        default="0.7.0", description="nvidia-pytriton wheel release that supplies tritonserver."
    )
    triton_ready_timeout_s: float = Field(
        default=120.0, gt=0, description="Seconds to wait for Triton to report ready."
    )
    triton_exit_timeout_s: int = Field(
        default=30,
        ge=0,
        description="Grace period for in-flight requests when Triton is asked to stop.",
    )

    worker_artifact: ArtifactChoice = Field(
        default="auto",
        description="Artifact a worker serves: auto (fp32 on a GPU, INT8 on the CPU), int8 or "
        "fp32 (tensorrt is refused: workers run ONNX Runtime).",
    )
    worker_device: DeviceChoice = Field(
        default="auto",
        description="Where ONNX Runtime runs the model: auto (CUDA where onnxruntime-gpu and a "
        "GPU are there, else CPU), cpu or cuda.",
    )

    worker_max_active: int = Field(
        default=32, ge=1, description="Sequences decoded together (continuous batching slots)."
    )
    worker_max_queue: int = Field(
        default=256, ge=0, description="Requests waiting for a slot; beyond it, 'overloaded'."
    )
    worker_tokens_per_response: int = Field(
        default=8, ge=1, description="Tokens packed into one streamed response."
    )
    worker_response_interval_ms: float = Field(
        default=20.0, ge=0, description="Send a streamed response at least this often (ms)."
    )
    worker_responses_per_s: float = Field(
        default=500.0,
        ge=0,
        description="Streamed responses per second, all streams together: with N streams, "
        "each one's responses are at least N / this apart (packs grow under load; the first "
        "token still leaves at once); 0: no budget.",
    )
    worker_senders: int = Field(
        default=3,
        ge=1,
        description="Threads handing responses to the server at the same time (each send "
        "waits for an IPC round trip; one request's responses never overlap).",
    )
    worker_lanes: int = Field(
        default=0,
        ge=0,
        description="Sub-batches decoded at the same time, each on a thread of its own; 0: on "
        "a CPU one per core (at most one per 4 slots), on a GPU one.",
    )
    worker_threads: int = Field(
        default=0,
        ge=0,
        description="ONNX Runtime threads per lane; 0: the cores shared out among the lanes "
        "(with one lane, ONNX Runtime chooses).",
    )

    @property
    def triton_path(self) -> Path:
        return (self.triton_home or self.var_dir / "triton").expanduser().resolve()
