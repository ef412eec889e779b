"""Which artifact of a version a worker serves, on which device, checked before use.

Workers run models with ONNX Runtime. `TOLLGATE_WORKER_DEVICE` decides where: `cpu`, `cuda`
(ONNX Runtime's GPU build, `onnxruntime-gpu`, and a visible NVIDIA GPU) or `auto` (CUDA where
both are there, else the CPU). `TOLLGATE_WORKER_ARTIFACT` decides what: `int8`
(model.int8.onnx), `fp32` (model.onnx) or `auto`: fp32 on a GPU (ONNX Runtime's INT8 kernels
are CPU kernels), INT8 on the CPU. `tensorrt` names the trainer's TensorRT engine (model.plan),
which ONNX Runtime cannot run: it is refused with that reason. The file's SHA-256 must equal
the manifest's, or the version is not served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from registry.manifest import ArtifactRecord, Manifest, read_manifest, sha256_file

ArtifactChoice = Literal["auto", "int8", "fp32", "tensorrt"]
DeviceChoice = Literal["auto", "cpu", "cuda"]
Device = Literal["cpu", "cuda"]
_FORMATS = {"int8": "onnx-int8", "fp32": "onnx"}
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


class ArtifactError(RuntimeError):
    """The version cannot be served: the artifact is missing, unsupported or altered."""


@dataclass(frozen=True)
class ServedArtifact:
    path: Path
    record: ArtifactRecord
    tokenizer: Path
    manifest: Manifest
    device: Device

    @property
    def providers(self) -> list[str]:
        return providers(self.device)


def providers(device: Device) -> list[str]:
    """ONNX Runtime execution providers for `device` (the CPU stays as the fallback)."""
    return [CUDA_PROVIDER, CPU_PROVIDER] if device == "cuda" else [CPU_PROVIDER]


def gpu_visible() -> bool:
    """An NVIDIA GPU is exposed to this process (its device nodes exist)."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


def choose_device(
    choice: DeviceChoice,
    *,
    available: Sequence[str] | None = None,
    gpu: bool | None = None,
) -> Device:
    if choice not in {"auto", "cpu", "cuda"}:
        raise ArtifactError(f"unknown device {choice!r}: use auto, cpu or cuda")
    if choice == "cpu":
        return "cpu"
    if available is None:
        # Imported here: the gateway reads these settings but does not install ONNX Runtime.
        import onnxruntime as ort  # noqa: PLC0415

        available = ort.get_available_providers()
    has_provider = CUDA_PROVIDER in available
    has_gpu = gpu_visible() if gpu is None else gpu
    if has_provider and has_gpu:
        return "cuda"
    if choice == "auto":
        return "cpu"
    missing = "ONNX Runtime's GPU build (onnxruntime-gpu)" if not has_provider else "a visible GPU"
    raise ArtifactError(f"TOLLGATE_WORKER_DEVICE=cuda needs {missing}")


def choose(manifest: Manifest, choice: ArtifactChoice, *, device: Device) -> ArtifactRecord:
    if choice == "tensorrt":
        raise ArtifactError(
            "TOLLGATE_WORKER_ARTIFACT=tensorrt: workers run ONNX Runtime, which cannot run a "
            "TensorRT engine (model.plan); serve fp32 on a GPU (TOLLGATE_WORKER_DEVICE=cuda)"
        )
    if choice not in {"auto", *_FORMATS}:
        raise ArtifactError(f"unknown artifact choice {choice!r}: use auto, int8 or fp32")
    by_format = {a.format: a for a in manifest.artifacts}
    if choice == "auto":
        choice = "fp32" if device == "cuda" or "onnx-int8" not in by_format else "int8"
    wanted = _FORMATS[choice]
    if wanted not in by_format:
        raise ArtifactError(f"{manifest.model} v{manifest.version} has no {wanted} artifact")
    return by_format[wanted]


def resolve(
    version_dir: Path, choice: ArtifactChoice, device: DeviceChoice = "auto"
) -> ServedArtifact:
    """Pick the device and the artifact, then verify it and the tokenizer against the manifest."""
    manifest = read_manifest(version_dir)
    where = choose_device(device)
    record = choose(manifest, choice, device=where)
    tokenizer = next((a for a in manifest.artifacts if a.format == "tokenizer"), None)
    if tokenizer is None:
        raise ArtifactError(f"{manifest.model} v{manifest.version} has no tokenizer")
    for artifact in (record, tokenizer):
        path = version_dir / artifact.path
        if not path.is_file():
            raise ArtifactError(f"{path} is missing")
        digest = sha256_file(path)
        if digest != artifact.sha256:
            raise ArtifactError(
                f"{path} has SHA-256 {digest}, but the manifest says {artifact.sha256}"
            )
    return ServedArtifact(
        path=version_dir / record.path,
        record=record,
        tokenizer=version_dir / tokenizer.path,
        manifest=manifest,
        device=where,
    )
