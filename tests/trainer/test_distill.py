"""Distillation: the loss, where gradients go, and a short run that moves toward the teacher."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.trainer.tiny_preset import token_streams, write_preset
from trainer.checkpoint import load_model
from trainer.distill import DistillConfig, DistillError, check_pair, distillation_loss
from trainer.model import GPT, GPTConfig
from trainer.presets import load_preset
from trainer.train import train

SMALL = GPTConfig(vocab_size=64, context_length=32, n_layer=1, n_head=2, n_embd=16)


def test_kl_is_zero_when_student_matches_teacher() -> None:
    logits = torch.randn(2, 5, 64)
    targets = torch.randint(0, 64, (2, 5))
    total, kl = distillation_loss(
        logits, logits.clone(), targets, DistillConfig(temperature=2.0, alpha=1.0)
    )
    assert kl.item() == pytest.approx(0.0, abs=1e-6)
    assert total.item() == pytest.approx(0.0, abs=1e-5)


def test_gradients_reach_only_the_student() -> None:
    torch.manual_seed(0)
    student, teacher = GPT(SMALL), GPT(SMALL)
    idx = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        teacher_out = teacher(idx)[0]
    total, _ = distillation_loss(student(idx)[0], teacher_out, idx, DistillConfig())
    total.backward()  # type: ignore[no-untyped-call]
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_vocabularies_must_match() -> None:
    with pytest.raises(DistillError, match="vocabulary"):
        check_pair(teacher=GPT(SMALL), student=GPT(replace(SMALL, vocab_size=65)))


def test_a_short_distillation_run_moves_the_student_toward_the_teacher(tmp_path: Path) -> None:
    preset = load_preset(str(write_preset(tmp_path)))
    train_ids, val_ids = token_streams()
    teacher_run = train(
        config=preset.training,
        model_config=preset.model_config(64),
        train_ids=train_ids,
        val_ids=val_ids,
        run_dir=tmp_path / "teacher",
        progress=False,
    )
    teacher = load_model(Path(teacher_run.weights))
    student_config = replace(preset.model_config(64), n_layer=1)
    x = torch.from_numpy(val_ids[:256].astype("int64")).reshape(8, 32)

    def kl_to_teacher(student: GPT) -> float:
        with torch.no_grad():
            _, kl = distillation_loss(student(x)[0], teacher(x)[0], x, DistillConfig(alpha=1.0))
        return float(kl)

    torch.manual_seed(preset.training.seed)
    before = kl_to_teacher(GPT(student_config).eval())
    result = train(
        config=replace(preset.training, max_steps=40),
        model_config=student_config,
        train_ids=train_ids,
        val_ids=val_ids,
        run_dir=tmp_path / "student",
        teacher=teacher,
        distill=DistillConfig(temperature=2.0, alpha=0.9),
        progress=False,
    )
    after = kl_to_teacher(load_model(Path(result.weights)))
    assert after < before * 0.5
