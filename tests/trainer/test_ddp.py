"""Data-parallel training under a real torchrun with two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.trainer.tiny_preset import token_streams, write_preset

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
