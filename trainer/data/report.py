"""The pipeline report: counts per step, reasons, PII found, and the length distribution.

It is stored with the model version in the registry, so it must stay small: the length
distribution is kept as 101 quantiles (0 %, 1 %, ..., 100 %) of record length in characters,
enough to compare later traffic with the training data (e.g. a two-sample KS test).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table


class StepCount(BaseModel):
    step: str
    records_in: int
    records_out: int


class DataReport(BaseModel):
    source_uri: str
    options: dict[str, Any]
    steps: list[StepCount] = Field(default_factory=list)
    rejected: dict[str, int] = Field(default_factory=dict)
    pii: dict[str, int] = Field(default_factory=dict)
    lengths: dict[str, float] = Field(default_factory=dict)
    length_quantiles: list[int] = Field(default_factory=list)
    train_records: int = 0
    val_records: int = 0
    chars: int = 0
    dataset_sha256: str = ""
    seconds: float = 0.0

    def step(self, name: str, records_in: int, records_out: int) -> None:
        self.steps.append(StepCount(step=name, records_in=records_in, records_out=records_out))

    def describe_lengths(self, lengths: list[int]) -> None:
        values = np.asarray(lengths, dtype=np.int64)
        self.chars = int(values.sum())
        p = np.percentile(values, [50, 90, 99])
        self.lengths = {
            "min": int(values.min()),
            "p50": float(p[0]),
            "p90": float(p[1]),
            "p99": float(p[2]),
            "max": int(values.max()),
            "mean": float(values.mean()),
        }
        self.length_quantiles = [
            int(q) for q in np.percentile(values, np.arange(101), method="nearest")
        ]


def render(console: Console, report: DataReport) -> None:
    """A readable summary of the report for the terminal."""
    steps = Table("step", "in", "out", "dropped", title="data pipeline", title_justify="left")
    for s in report.steps:
        steps.add_row(
            s.step, f"{s.records_in:,}", f"{s.records_out:,}", f"{s.records_in - s.records_out:,}"
        )
    console.print(steps)
    if report.rejected:
        console.print(
            "rejected: " + ", ".join(f"{k} {v:,}" for k, v in sorted(report.rejected.items()))
        )
    if report.pii:
        console.print(
            "PII scrubbed: " + ", ".join(f"{k} {v:,}" for k, v in sorted(report.pii.items()))
        )
    lengths = ", ".join(f"{k} {v:,.0f}" for k, v in report.lengths.items())
    console.print(f"record length (chars): {lengths}")
    console.print(
        f"kept {report.train_records + report.val_records:,} records ({report.chars:,} chars): "
        f"train {report.train_records:,}, validation {report.val_records:,}; "
        f"dataset sha256 {report.dataset_sha256}; {report.seconds:.1f} s"
    )
