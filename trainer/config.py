"""Trainer settings, read from `TOLLGATE_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from registry.config import RegistrySettings


class TrainerSettings(RegistrySettings):
    """Where training runs live and what they run on; registry settings are inherited."""

    runs_dir: Path | None = Field(
        default=None,
        description="Training runs (data, checkpoints, exports); default <var_dir>/runs.",
    )
    trainer_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Device for training: auto picks CUDA when available."
    )
    trainer_threads: int = Field(
        default=0, ge=0, description="CPU threads for PyTorch; 0 keeps PyTorch's default."
    )

    @property
    def runs_path(self) -> Path:
        return (self.runs_dir or self.var_dir / "runs").expanduser().resolve()
