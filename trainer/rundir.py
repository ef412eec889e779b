"""A training run's directory: where each step's files go, and `run.json`, its record.

    <runs>/<run>/run.json            model name, preset (with overrides), inputs, teacher
                 data/               train.jsonl, val.jsonl, rejects.jsonl, report.json
                 tokenizer.json
                 ids/                train.npy, val.npy (token streams)
                 checkpoint.pt, model.pt, result.json        (train)
                 export/model.onnx, export/parity.json       (export)
                 export/model.int8.onnx, model.qdq.onnx, quantization.json [, model.plan]
                 published.json                              (publish)

The pipeline's steps (`trainer.runs`) and the torchrun entry point (`trainer.train`) both
find a run's files here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trainer.checkpoint import WEIGHTS_NAME
from trainer.presets import Preset, load_preset


class StepError(RuntimeError):
    """A step cannot run yet; the message says which step to run first."""


@dataclass(frozen=True)
class RunSpec:
    """What `run.json` records: enough to run or resume every step the same way."""

    model: str
    preset: str
    preset_config: dict[str, Any]
    inputs: list[str] | None
    teacher: dict[str, Any] | None = None  # {"model", "version", "weights", "tokenizer"}
    created_at: str = ""


class Run:
    def __init__(self, path: Path) -> None:
        self.path = path

    # -- layout -----------------------------------------------------------------------------
    @property
    def spec_path(self) -> Path:
        return self.path / "run.json"

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def ids_dir(self) -> Path:
        return self.path / "ids"

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_NAME

    @property
    def result(self) -> Path:
        return self.path / "result.json"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    @property
    def published(self) -> Path:
        return self.path / "published.json"

    # -- spec -------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, spec: RunSpec) -> Run:
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        stamped = RunSpec(
            **{**asdict(spec), "created_at": spec.created_at or datetime.now(UTC).isoformat()}
        )
        run.spec_path.write_text(json.dumps(asdict(stamped), indent=2) + "\n")
        return run

    @classmethod
    def open(cls, path: Path) -> Run:
        """An existing run; `StepError` if `path` is not one."""
        run = cls(path)
        run.spec()
        return run

    def spec(self) -> RunSpec:
        if not self.spec_path.is_file():
            raise StepError(
                f"{self.path} is not a training run (no run.json): start one with `data` or `run`"
            )
        return RunSpec(**json.loads(self.spec_path.read_text()))

    def preset(self) -> Preset:
        spec = self.spec()
        return load_preset(spec.preset).with_training(**spec.preset_config.get("training", {}))

    def require(self, path: Path, step: str) -> Path:
        if not path.exists():
            raise StepError(
                f"{path} is missing: run `python -m trainer {step} --run-dir {self.path}` first"
            )
        return path

    def ids(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        self.require(self.ids_dir / "val.npy", "data")
        return np.load(self.ids_dir / "train.npy"), np.load(self.ids_dir / "val.npy")
