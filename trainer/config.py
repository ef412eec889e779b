"""Trainer settings, read from `TOLLGATE_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.config import RegistrySettings


class TrainerSettings(BaseSettings):
    """Where training runs live and what they run on, and the registry it publishes to."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", extra="forbid")

    registry: RegistrySettings = Field(default_factory=RegistrySettings)

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
        return (self.runs_dir or self.registry.var_dir / "runs").expanduser().resolve()
