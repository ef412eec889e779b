"""Training: learning, budgets, the schedule, and resuming a killed run exactly."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.trainer.tiny_preset import token_streams, write_preset
from trainer.checkpoint import CHECKPOINT_NAME, load_checkpoint, load_model
from trainer.optim import lr_at
from trainer.presets import Preset, TrainConfig, load_preset
from trainer.process import TrainResult
from trainer.train import train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def preset(tmp_path: Path) -> Preset:
    return load_preset(str(write_preset(tmp_path)))


def _train(preset: Preset, run_dir: Path, **changes: object) -> TrainResult:
    train_ids, val_ids = token_streams()
    return train(
        config=replace(preset.training, **changes),  # type: ignore[arg-type]
        model_config=preset.model_config(64),
        train_ids=train_ids,
        val_ids=val_ids,
        run_dir=run_dir,
        progress=False,
    )


def test_training_learns_and_records_its_result(preset: Preset, tmp_path: Path) -> None:
    result = _train(preset, tmp_path / "run")
    assert (result.steps, result.stopped_by, result.world_size) == (60, "steps", 1)
    assert result.history[0]["step"] == 20
    assert result.val_loss < math.log(64) * 0.7, "well below the loss of a uniform guess"
    assert result.val_perplexity == pytest.approx(math.exp(result.val_loss))
    written = json.loads((tmp_path / "run" / "result.json").read_text())
    assert (written["steps"], written["replicas_in_sync"]) == (60, True)
    model = load_model(Path(result.weights))
    assert model.config.n_layer == 2
    assert model.num_parameters() == result.parameters


def test_the_time_budget_ends_training_cleanly(preset: Preset, tmp_path: Path) -> None:
    result = _train(preset, tmp_path / "run", max_steps=100_000, max_minutes=0.02)
    assert result.stopped_by == "time"
    assert 0 < result.steps < 100_000
    assert result.elapsed_s >= 1.2
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["state"]["step"] == result.steps


def test_warmup_then_cosine_decay() -> None:
    config = TrainConfig(learning_rate=1.0, min_learning_rate=0.1, warmup_steps=10, max_steps=110)
    assert lr_at(0, config) == pytest.approx(0.1)
    assert lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(60, config) == pytest.approx(0.55)
    assert lr_at(110, config) == pytest.approx(0.1)
    assert all(lr_at(s, config) >= lr_at(s + 1, config) for s in range(10, 110))


def test_a_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(
    preset: Preset, tmp_path: Path
) -> None:
    reference = _train(preset, tmp_path / "reference")
    run_dir = tmp_path / "killed"
    run_dir.mkdir()
    log = tmp_path / "child.log"
    with log.open("wb") as sink:
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("train_child.py")), str(run_dir)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while not (run_dir / CHECKPOINT_NAME).exists():
        assert child.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(run_dir / CHECKPOINT_NAME)["state"]["step"]
    assert 0 < killed_at < 60, "the run was killed part-way"
    assert not (run_dir / "result.json").exists()

    resumed = _train(preset, run_dir)
    assert resumed.steps == 60
    ours, theirs = (
        load_model(Path(resumed.weights)).state_dict(),
        load_model(Path(reference.weights)).state_dict(),
    )
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert resumed.history[-1] == reference.history[-1]
