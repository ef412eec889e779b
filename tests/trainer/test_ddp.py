"""Data-parallel training under a real torchrun with two CPU processes (gloo)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from rich.console import Console

from tests.trainer.tiny_preset import token_streams, write_preset
from trainer.rundir import Run, RunSpec
from trainer.runs import step_data

ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_train_in_sync_and_record_the_world_size(tmp_path: Path) -> None:
    train_ids, val_ids = token_streams()
    np.save(tmp_path / "train.npy", train_ids)
    np.save(tmp_path / "val.npy", val_ids)
    preset = write_preset(tmp_path)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "trainer.train", "--ids-dir", str(tmp_path), "--run-dir", str(tmp_path / "run"),
        "--preset", str(preset), "--vocab-size", "64", "--max-steps", "12", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=180, check=False, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert (result["world_size"], result["steps"], result["replicas_in_sync"]) == (2, 12, True)
    assert result["tokens_seen"] == 12 * 8 * 32 * 2
    assert (tmp_path / "run" / "model.pt").is_file()


def test_torchrun_trains_a_prepared_run_directory(tmp_path: Path) -> None:
    preset = tmp_path / "preset.toml"
    preset.write_text(PRESET_WITH_BPE)
    data = tmp_path / "data.jsonl"
    lines = [
        json.dumps({"text": f"def f{i}(x):\n    return x * {i} + {i * 7 % 13}\n" * 3})
        for i in range(60)
    ]
    data.write_text("\n".join(lines) + "\n")
    run = Run.create(
        tmp_path / "run",
        RunSpec(model="ddp", preset=str(preset), preset_config={}, inputs=[str(data)]),
    )
    step_data(run, Console(file=io.StringIO()))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "trainer.train", "--run-dir", str(run.path), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=180, check=False, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(run.result.read_text())
    assert (result["world_size"], result["steps"], result["replicas_in_sync"]) == (2, 8, True)


PRESET_WITH_BPE = """
[data]
val_fraction = 0.2
near_duplicate_threshold = 0.95
[tokenizer]
vocab_size = 300
[model]
context_length = 16
n_layer = 1
n_head = 2
n_embd = 16
[training]
batch_size = 4
max_steps = 8
eval_interval = 4
eval_batches = 1
checkpoint_interval = 4
precision = "fp32"
"""
