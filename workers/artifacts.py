"""Which artifact of a version a worker serves, checked against its manifest before use.

`TOLLGATE_WORKER_ARTIFACT` decides: `int8` (model.int8.onnx), `fp32` (model.onnx),
`tensorrt` (model.plan, needs TensorRT and a GPU), or `auto`: the TensorRT engine where one
was built and TensorRT can run it, else INT8 on CPU. The file's SHA-256 must equal the
manifest's, or the version is not served.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from registry.manifest import ArtifactRecord, Manifest, read_manifest, sha256_file

ArtifactChoice = Literal["auto", "int8", "fp32", "tensorrt"]
_FORMATS = {"int8": "onnx-int8", "fp32": "onnx", "tensorrt": "tensorrt"}


class ArtifactError(RuntimeError):
    """The version cannot be served: the artifact is missing, unsupported or altered."""


@dataclass(frozen=True)
class ServedArtifact:
    path: Path
    record: ArtifactRecord
    tokenizer: Path
    manifest: Manifest


def tensorrt_usable() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import torch  # noqa: PLC0415 (only asked when TensorRT is installed)

    return bool(torch.cuda.is_available())


def choose(manifest: Manifest, choice: ArtifactChoice, *, tensorrt: bool) -> ArtifactRecord:
    if choice not in {"auto", *_FORMATS}:
        raise ArtifactError(f"unknown artifact choice {choice!r}: use auto, int8, fp32 or tensorrt")
    by_format = {a.format: a for a in manifest.artifacts}
    if choice == "auto":
        choice = "tensorrt" if tensorrt and "tensorrt" in by_format else "int8"
        if choice == "int8" and "onnx-int8" not in by_format:
            choice = "fp32"
    if choice == "tensorrt" and not tensorrt:
        raise ArtifactError("TOLLGATE_WORKER_ARTIFACT=tensorrt needs TensorRT and a CUDA GPU")
    wanted = _FORMATS[choice]
    if wanted not in by_format:
        raise ArtifactError(f"{manifest.model} v{manifest.version} has no {wanted} artifact")
    return by_format[wanted]


def resolve(version_dir: Path, choice: ArtifactChoice) -> ServedArtifact:
    """Pick the artifact, then verify it and the tokenizer against the manifest."""
    manifest = read_manifest(version_dir)
    record = choose(manifest, choice, tensorrt=tensorrt_usable())
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
    )
