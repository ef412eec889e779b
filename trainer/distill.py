"""Knowledge distillation: a student learns from a teacher's temperature-softened logits.

loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

The T^2 factor keeps the soft-target gradients on the same scale as the hard-target ones when
T changes (Hinton et al., 2015). Teacher and student must share one vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from trainer.model import GPT


class DistillError(ValueError):
    """Teacher and student cannot be paired (e.g. different vocabularies)."""


@dataclass(frozen=True)
class DistillConfig:
    temperature: float = 2.0
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.temperature <= 0 or not 0 <= self.alpha <= 1:
            raise DistillError("temperature must be positive and alpha in [0, 1]")


def check_pair(*, teacher: GPT, student: GPT) -> None:
    if teacher.config.vocab_size != student.config.vocab_size:
        raise DistillError(
            f"teacher vocabulary ({teacher.config.vocab_size}) differs from the student's "
            f"({student.config.vocab_size}): distill with the teacher's tokenizer"
        )
    if student.config.context_length > teacher.config.context_length:
        raise DistillError(
            f"student context {student.config.context_length} exceeds the teacher's "
            f"{teacher.config.context_length}"
        )


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, config: DistillConfig
) -> tuple[Tensor, Tensor]:
    """(total loss, KL term) for logits (B, T, V) and targets (B, T)."""
    t = config.temperature
    vocab = student_logits.size(-1)
    student_log_probs = F.log_softmax(student_logits.float().reshape(-1, vocab) / t, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float().reshape(-1, vocab) / t, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="batchmean")
    hard = F.cross_entropy(student_logits.reshape(-1, vocab), targets.reshape(-1), ignore_index=-1)
    total = config.alpha * (t * t) * kl + (1.0 - config.alpha) * hard
    return total, kl.detach()


@torch.no_grad()
def teacher_logits(teacher: GPT, idx: Tensor) -> Tensor:
    logits: Tensor = teacher(idx)[0]
    return logits
