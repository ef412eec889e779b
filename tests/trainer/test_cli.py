"""`python -m trainer` end to end on small data: every step, the registry record, errors."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from registry import aliases, integrity
from registry.config import RegistrySettings
from registry.db import connect, reading
from tests.cli import run_module

ROOT = Path(__file__).resolve().parents[2]
PRESET = """
description = "cli test preset"
[data]
val_fraction = 0.1
[tokenizer]
vocab_size = 320
[model]
context_length = 32
n_layer = 2
n_head = 2
n_embd = 32
[training]
batch_size = 8
max_steps = 12
learning_rate = 1e-2
min_learning_rate = 1e-3
warmup_steps = 2
eval_interval = 6
eval_batches = 2
checkpoint_interval = 6
precision = "fp32"
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "preset.toml").write_text(PRESET)
    words = [
        "total",
        "value",
        "count",
        "items",
        "result",
        "index",
        "buffer",
        "parser",
        "token",
        "node",
    ]
    rng = random.Random(3)
    rows = []
    for i in range(120):
        a, b, c = rng.sample(words, 3)
        body = (
            f"def {a}_{i}({b}, {c}):\n    {a} = {b} * {rng.randrange(99)} + {c}\n    return {a}\n"
        )
        rows.append({"text": body * rng.randrange(1, 4), "id": i})
    rows.append({"text": "contact me at dev@example.com\n" * 3})
    (root / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    return root


def _cli(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TOLLGATE_VAR_DIR": str(workspace / "var"),
        "TOLLGATE_MODEL_REPOSITORY": str(workspace / "repo"),
        "TOLLGATE_DATABASE_URL": "",
        "TOLLGATE_TRAINER_THREADS": "2",
    }
    return run_module("trainer", *args, env=env, timeout=600)


def _ok(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(result.stdout[result.stdout.index("{\n") :])
    return parsed


def _registry(workspace: Path) -> RegistrySettings:
    return RegistrySettings(var_dir=workspace / "var", model_repository=workspace / "repo")


@pytest.fixture(scope="module")
def published(workspace: Path) -> dict[str, Any]:
    preset, data = str(workspace / "preset.toml"), str(workspace / "data.jsonl")
    return _ok(
        _cli(workspace, "run", "--preset", preset, "--data", data, "--model", "demo", "--json")
    )


def test_run_publishes_a_ready_int8_version_with_its_record(
    workspace: Path, published: dict[str, Any]
) -> None:
    assert (published["model"], published["version"], published["status"]) == ("demo", 1, "ready")
    formats = {a["path"]: a["format"] for a in published["artifacts"]}
    assert formats == {
        "model.int8.onnx": "onnx-int8",
        "model.onnx": "onnx",
        "model.qdq.onnx": "onnx-qdq",
        "model.pt": "pytorch",
        "model.py": "triton-python",
        "tokenizer.json": "tokenizer",
    }
    metrics = published["metrics"]
    for key in (
        "val_perplexity",
        "quant_size_ratio",
        "quant_decode_speed_ratio",
        "quant_perplexity_change",
    ):
        assert isinstance(metrics[key], float), key
    assert metrics["steps"] == 12
    assert metrics["quant_size_ratio"] < 1
    assert published["hyperparameters"]["model"]["n_layer"] == 2
    assert published["hyperparameters"]["training"]["max_steps"] == 12
    report = published["data_report"]
    assert report["dataset_sha256"] == published["dataset_sha256"]
    assert report["rejected"] == {"invalid_json": 1}
    assert report["pii"] == {"email": 3}
    assert published["code_revision"]
    settings = _registry(workspace)
    db = connect(settings)
    with reading(db) as session:
        assert integrity.verify_version(
            session=session, repository=settings.model_repository, model="demo", version=1
        ).ok
    db.dispose()
    manifest = json.loads((workspace / "repo" / "demo" / "1" / "manifest.json").read_text())
    assert manifest["dataset"]["sha256"] == published["dataset_sha256"]


def test_run_can_skip_a_model_that_is_already_published(
    workspace: Path, published: dict[str, Any]
) -> None:
    again = _cli(workspace, "run", "--model", "demo", "--skip-if-published", "--json")
    assert again.returncode == 0, again.stderr
    assert "already has a ready version" in again.stdout
    assert _ok(again)["version"] == published["version"]


def test_a_fresh_deployment_serves_its_first_trained_version(
    workspace: Path, published: dict[str, Any]
) -> None:
    first = _cli(workspace, "run", "--model", "demo", "--skip-if-published", "--production-if-none")
    assert first.returncode == 0, first.stderr
    assert f"demo v{published['version']} is now production" in first.stdout
    again = _cli(workspace, "run", "--model", "demo", "--skip-if-published", "--production-if-none")
    assert again.returncode == 0, again.stderr
    assert "now production" not in again.stdout
    db = connect(_registry(workspace))
    with reading(db) as session:
        events = aliases.list_history(session=session, model="demo").items
    db.dispose()
    assert [(e.alias, e.to_version, e.actor) for e in events] == [
        ("production", published["version"], "trainer")
    ]


def test_each_step_runs_alone(workspace: Path, published: dict[str, Any]) -> None:
    run_dir = workspace / "var" / "runs" / "steps"
    preset, data = str(workspace / "preset.toml"), str(workspace / "data.jsonl")
    missing = _cli(workspace, "export", "--run-dir", str(run_dir))
    assert missing.returncode == 1
    assert "not a training run" in missing.stderr
    assert (
        _cli(
            workspace,
            "data",
            "--run-dir",
            str(run_dir),
            "--preset",
            preset,
            "--data",
            data,
            "--model",
            "demo",
        ).returncode
        == 0
    )
    early = _cli(workspace, "export", "--run-dir", str(run_dir))
    assert early.returncode == 1
    assert "python -m trainer train --run-dir" in early.stderr
    for step in ("train", "export", "quantize"):
        done = _cli(workspace, step, "--run-dir", str(run_dir))
        assert done.returncode == 0, done.stderr[-2000:]
    version = _ok(_cli(workspace, "publish", "--run-dir", str(run_dir), "--json"))
    assert (version["version"], version["dataset_sha256"]) == (2, published["dataset_sha256"])


def test_distill_records_the_teacher_as_parent(workspace: Path, published: dict[str, Any]) -> None:
    preset, data = str(workspace / "preset.toml"), str(workspace / "data.jsonl")
    student = _ok(
        _cli(
            workspace,
            "distill",
            "--teacher",
            "demo:1",
            "--preset",
            preset,
            "--data",
            data,
            "--model",
            "demo-student",
            "--max-steps",
            "6",
            "--json",
        )
    )
    assert student["parent"] == {"model": "demo", "version": 1}
    assert student["hyperparameters"]["distill"] == {"temperature": 2.0, "alpha": 0.5}
    assert student["metrics"]["steps"] == 6


def test_export_hf_writes_a_loadable_directory(workspace: Path, published: dict[str, Any]) -> None:
    out = workspace / "hf"
    done = _cli(workspace, "export-hf", "demo", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, published["hyperparameters"]["model"]["vocab_size"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--preset", "nope"], "no preset 'nope'"),
        (
            ["run", "--data", "/nonexistent/data.jsonl", "--max-steps", "1"],
            "is not a file, a directory or a glob",
        ),
        (["run", "--model", "Bad Name"], "invalid model name"),
        (["distill", "--teacher", "demo"], "MODEL:VERSION"),
        (["distill", "--teacher", "demo:99"], "has no version 99"),
        (["export-hf", "nope", "1", "--out", "/tmp/x"], "no model named 'nope'"),
    ],
)
def test_errors_are_one_line(
    workspace: Path, published: dict[str, Any], args: list[str], message: str
) -> None:
    done = _cli(workspace, *args)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
