"""The served artifact follows the setting and must match the manifest's SHA-256."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.manifest import DatasetRecord, Manifest, describe_file, write_manifest
from registry.tables import utcnow
from workers.artifacts import ArtifactError, choose, choose_device, providers, resolve


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


def test_auto_serves_int8_on_the_cpu_and_fp32_on_a_gpu(tmp_path: Path) -> None:
    version = _version(tmp_path, {**FILES, "model.plan": "tensorrt"})
    served = resolve(version, "auto", "cpu")
    assert (served.path.name, served.device) == ("model.int8.onnx", "cpu")
    assert served.providers == ["CPUExecutionProvider"]
    assert resolve(version, "fp32", "cpu").path.name == "model.onnx"
    assert choose(served.manifest, "auto", device="cuda").path == "model.onnx"
    assert choose(served.manifest, "int8", device="cuda").path == "model.int8.onnx"


def test_a_tensorrt_engine_is_refused_with_the_reason(tmp_path: Path) -> None:
    manifest = resolve(_version(tmp_path, {**FILES, "model.plan": "tensorrt"}), "auto").manifest
    for device in ("cpu", "cuda"):
        with pytest.raises(ArtifactError, match="cannot run a TensorRT engine"):
            choose(manifest, "tensorrt", device=device)


def test_the_device_follows_onnx_runtime_and_the_gpu() -> None:
    gpu_build = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    cpu_build = ["CPUExecutionProvider"]
    assert choose_device("auto", available=gpu_build, gpu=True) == "cuda"
    assert choose_device("auto", available=gpu_build, gpu=False) == "cpu"
    assert choose_device("auto", available=cpu_build, gpu=True) == "cpu"
    assert choose_device("cpu", available=gpu_build, gpu=True) == "cpu"
    assert choose_device("cuda", available=gpu_build, gpu=True) == "cuda"
    assert providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ArtifactError, match="onnxruntime-gpu"):
        choose_device("cuda", available=cpu_build, gpu=True)
    with pytest.raises(ArtifactError, match="a visible GPU"):
        choose_device("cuda", available=gpu_build, gpu=False)
    with pytest.raises(ArtifactError, match="unknown device"):
        choose_device("tpu")  # type: ignore[arg-type]


def test_this_machine_runs_on_the_cpu_without_being_told(tmp_path: Path) -> None:
    """No GPU and ONNX Runtime's CPU build here: auto serves INT8 on the CPU, cuda is refused."""
    version = _version(tmp_path, FILES)
    assert resolve(version, "auto").device == "cpu"
    with pytest.raises(ArtifactError, match="TOLLGATE_WORKER_DEVICE=cuda needs"):
        resolve(version, "auto", "cuda")


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
