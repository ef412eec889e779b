"""Saving and loading training state (to resume) and model weights (to export and publish).

A checkpoint holds everything a resumed run needs to continue exactly as if it had never
stopped: model, optimizer and grad-scaler state, the step (the learning-rate schedule is a
function of it), tokens seen, elapsed time, every rank's batch-sampling generator state and
the global RNG states. Files are written to a temporary name, fsynced and renamed, so a
kill mid-write never damages the last good checkpoint.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.model import GPT, GPTConfig

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "model.pt"


@dataclass
class TrainingState:
    step: int = 0
    tokens_seen: int = 0
    elapsed_s: float = 0.0
    best_val_loss: float = float("inf")
    history: list[dict[str, float]] = field(default_factory=list)


def _atomic_save(payload: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def rng_states() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(
    path: Path,
    *,
    model: GPT,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    state: TrainingState,
    data_generators: list[torch.Tensor],
    config: dict[str, Any],
) -> None:
    _atomic_save(
        {
            "model": model.state_dict(),
            "model_config": model.config.to_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "state": vars(state),
            "data_generators": data_generators,
            "rng": rng_states(),
            "config": config,
        },
        path,
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The whole checkpoint (trusted: written by this trainer; it holds RNG state objects)."""
    payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return payload


def save_weights(model: GPT, path: Path) -> Path:
    """Model weights and config only, loadable with `weights_only=True`."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic_save({"model_config": model.config.to_dict(), "model": state}, path)
    return path


def load_model(path: Path) -> GPT:
    """A model in eval mode from a weights file or a full checkpoint."""
    payload = torch.load(path, map_location="cpu", weights_only=path.name != CHECKPOINT_NAME)
    model = GPT(GPTConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["model"])
    return model.eval()
