"""Training presets as data: `trainer/configs/<name>.toml` into typed settings."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from trainer.data.pipeline import DataOptions
from trainer.model import GPTConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
Precision = Literal["auto", "fp32", "bf16", "fp16"]


class PresetError(ValueError):
    """A preset that does not exist or does not parse; the message says which and why."""


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    grad_accum_steps: int = 1
    max_steps: int = 1000
    max_minutes: float = 0.0  # 0: no time budget
    learning_rate: float = 3e-3
    min_learning_rate: float = 3e-4
    warmup_steps: int = 40
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_interval: int = 100
    eval_batches: int = 8
    checkpoint_interval: int = 50
    seed: int = 1337
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.grad_accum_steps < 1 or self.max_steps < 1:
            raise PresetError("batch_size, grad_accum_steps and max_steps must be positive")
        if self.precision not in {"auto", "fp32", "bf16", "fp16"}:
            raise PresetError(f"precision must be auto, fp32, bf16 or fp16, not {self.precision!r}")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    data: DataOptions
    vocab_size: int
    model: dict[str, Any]  # GPTConfig fields except vocab_size, which the tokenizer decides
    training: TrainConfig

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, **self.model)

    def with_training(self, **changes: Any) -> Preset:
        """A copy with some training settings replaced (e.g. from command-line flags)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return replace(self, training=replace(self.training, **given)) if given else self

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.name,
            "data": asdict(self.data),
            "tokenizer": {"vocab_size": self.vocab_size},
            "model": dict(self.model),
            "training": asdict(self.training),
        }


def available() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def load_preset(name: str) -> Preset:
    """A preset by name (`tiny`, `small`) or by path to a TOML file of the same shape."""
    path = Path(name) if name.endswith(".toml") else CONFIG_DIR / f"{name}.toml"
    if not path.is_file():
        raise PresetError(f"no preset {name!r}; presets: {', '.join(available())}, or a .toml path")
    try:
        raw = tomllib.loads(path.read_text())
        model = dict(raw["model"])
        unknown = set(model) - {f.name for f in fields(GPTConfig)} | ({"vocab_size"} & set(model))
        if unknown:
            raise PresetError(f"preset {name!r}: unknown [model] keys {sorted(unknown)}")
        return Preset(
            name=path.stem,
            description=str(raw.get("description", "")),
            data=DataOptions(**raw.get("data", {})),
            vocab_size=int(raw["tokenizer"]["vocab_size"]),
            model=model,
            training=TrainConfig(**raw["training"]),
        )
    except PresetError:
        raise
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise PresetError(f"preset {name!r} ({path}) is invalid: {exc}") from exc
