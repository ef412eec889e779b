"""The served artifact follows the setting and must match the manifest's SHA-256."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.manifest import DatasetRecord, Manifest, describe_file, write_manifest
from registry.tables import utcnow
from workers.artifacts import ArtifactError, choose, resolve


def _version(tmp_path: Path, names: dict[str, str]) -> Path:
    for name in names:
        (tmp_path / name).write_bytes(name.encode() * 10)
    write_manifest(
        tmp_path,
        Manifest(
            model="m",
            version=1,
            created_at=utcnow(),
            dataset=DatasetRecord(sha256="0" * 64),
            artifacts=[describe_file(tmp_path, name, fmt) for name, fmt in names.items()],
        ),
    )
    return tmp_path


FILES = {"model.onnx": "onnx", "model.int8.onnx": "onnx-int8", "tokenizer.json": "tokenizer"}


def test_auto_serves_int8_on_cpu_and_tensorrt_where_usable(tmp_path: Path) -> None:
    version = _version(tmp_path, {**FILES, "model.plan": "tensorrt"})
    assert resolve(version, "auto").path.name == "model.int8.onnx"
    assert resolve(version, "fp32").path.name == "model.onnx"
    manifest = resolve(version, "auto").manifest
    assert choose(manifest, "auto", tensorrt=True).path == "model.plan"
    with pytest.raises(ArtifactError, match="needs TensorRT"):
        choose(manifest, "tensorrt", tensorrt=False)


def test_an_altered_or_missing_file_is_not_served(tmp_path: Path) -> None:
    version = _version(tmp_path, FILES)
    (version / "model.int8.onnx").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="SHA-256"):
        resolve(version, "int8")
    (version / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        resolve(version, "fp32")


def test_a_version_without_the_wanted_format_is_refused(tmp_path: Path) -> None:
    version = _version(tmp_path, {"model.onnx": "onnx", "tokenizer.json": "tokenizer"})
    assert resolve(version, "auto").path.name == "model.onnx", "auto falls back to fp32"
    with pytest.raises(ArtifactError, match="no onnx-int8 artifact"):
        resolve(version, "int8")
