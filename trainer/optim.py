"""The optimizer: AdamW, decaying matrices only, and its warmup + cosine learning rate."""

from __future__ import annotations

import math

import torch

from trainer.model import GPT
from trainer.presets import TrainConfig


def adamw(model: GPT, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `model`'s trainable parameters; weight decay on matrices and embeddings
    (two or more dimensions), none on biases and norm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {
                "params": [p for p in params if p.dim() >= 2],
                "weight_decay": config.weight_decay,
            },
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        foreach=True,
    )


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to the peak, then cosine decay to the minimum at `max_steps`."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(
        1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    )
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_learning_rate + cosine * (config.learning_rate - config.min_learning_rate)
