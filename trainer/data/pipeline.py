"""`build_dataset`: raw inputs in, a cleaned, hashed and split dataset (and its report) out.

Steps, each counted in the report: read (decode, parse) → validate (length bounds) → scrub
PII → drop length outliers (z-score of log length) → drop exact duplicates → drop near
duplicates (MinHash LSH). Then the dataset hash and the split. Written to `out_dir`:
`train.jsonl`, `val.jsonl`, `rejects.jsonl` (every dropped record with file, line and reason)
and `report.json`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from datasketch import MinHashLSH

from trainer.data import dedup, hashing, pii
from trainer.data.records import Record, Reject
from trainer.data.report import DataReport
from trainer.data.sources import read_records, resolve_inputs


class EmptyDatasetError(ValueError):
    """Nothing was left after cleaning; the message names the step that removed the rest."""


@dataclass(frozen=True)
class DataOptions:
    min_chars: int = 16
    max_chars: int = 200_000  # per record
    max_total_chars: int = 0  # cap on what is read; 0 reads everything
    outlier_z: float = 4.0
    near_duplicate_threshold: float = 0.85
    minhash_permutations: int = 128
    scrub_pii: bool = True
    val_fraction: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.near_duplicate_threshold < 1:
            raise ValueError("near_duplicate_threshold must be in (0, 1)")
        try:
            MinHashLSH(threshold=self.near_duplicate_threshold, num_perm=self.minhash_permutations)
        except ValueError as exc:
            raise ValueError(
                f"near_duplicate_threshold {self.near_duplicate_threshold} cannot be used with "
                f"{self.minhash_permutations} MinHash permutations ({exc}); lower it or add some"
            ) from exc
        if not 0 < self.val_fraction < 1:
            raise ValueError("val_fraction must be in (0, 1)")
        if self.min_chars < 1 or self.max_chars < self.min_chars:
            raise ValueError("need 1 <= min_chars <= max_chars")


@dataclass(frozen=True)
class CleanDataset:
    train: list[str]
    val: list[str]
    sha256: str
    source_uri: str
    report: DataReport


def build_dataset(
    *, inputs: Sequence[str | Path] | None, out_dir: Path, options: DataOptions
) -> CleanDataset:
    started = time.perf_counter()
    resolved = resolve_inputs(inputs)
    report = DataReport(source_uri=resolved.uri, options=asdict(options))
    rejects: list[Reject] = []
    records: list[Record] = []
    read = 0
    for item in read_records(resolved.files, max_chars=options.max_total_chars):
        read += 1
        (rejects.append(item) if isinstance(item, Reject) else records.append(item))
    report.step("read", read, len(records))

    records = _apply(report, rejects, "validate", records, [_invalid(r, options) for r in records])
    if options.scrub_pii:
        found: Counter[str] = Counter()
        for record in records:
            record.text = pii.scrub(record.text, found)
        report.pii = dict(sorted(found.items()))
    # Canonical order from here on: what survives dedup never depends on input order.
    records.sort(key=lambda r: r.sha256)
    records = _apply(
        report, rejects, "length_outliers", records, _outliers(records, options.outlier_z)
    )
    flags = dedup.exact_duplicates(records)
    records = _apply(
        report, rejects, "exact_duplicates", records, ["duplicate" if f else None for f in flags]
    )
    flags = dedup.near_duplicates(
        records, threshold=options.near_duplicate_threshold, num_perm=options.minhash_permutations
    )
    records = _apply(
        report,
        rejects,
        "near_duplicates",
        records,
        ["near_duplicate" if f else None for f in flags],
    )

    report.rejected = dict(sorted(Counter(r.reason for r in rejects).items()))
    if not records:
        last = next((s.step for s in reversed(report.steps) if s.records_in), "read")
        raise EmptyDatasetError(
            f"no records left after cleaning: step '{last}' removed the last of them "
            f"({read} read from {len(resolved.files)} files; rejected: {report.rejected or 'none'})"
        )
    train, val = hashing.split(records, val_fraction=options.val_fraction)
    report.dataset_sha256 = hashing.dataset_sha256(records)
    report.train_records, report.val_records = len(train), len(val)
    report.describe_lengths([len(r.text) for r in records])
    report.seconds = round(time.perf_counter() - started, 3)
    _write(out_dir, train, val, rejects, report)
    return CleanDataset(
        train=[r.text for r in train],
        val=[r.text for r in val],
        sha256=report.dataset_sha256,
        source_uri=resolved.uri,
        report=report,
    )


def load_dataset(out_dir: Path) -> CleanDataset:
    """Read back what `build_dataset` wrote (for steps run on their own)."""
    report = DataReport.model_validate_json((out_dir / "report.json").read_text())
    return CleanDataset(
        train=_texts(out_dir / "train.jsonl"),
        val=_texts(out_dir / "val.jsonl"),
        sha256=report.dataset_sha256,
        source_uri=report.source_uri,
        report=report,
    )


def _invalid(record: Record, options: DataOptions) -> str | None:
    if len(record.text.strip()) < options.min_chars:
        return "too_short"
    if len(record.text) > options.max_chars:
        return "too_long"
    return None


def _outliers(records: Sequence[Record], z: float) -> list[str | None]:
    """Flag records whose log length lies more than `z` standard deviations from the mean."""
    if len(records) < 10:
        return [None] * len(records)
    logs = np.log(np.array([max(1, len(r.text)) for r in records], dtype=np.float64))
    std = float(logs.std())
    if std == 0.0:
        return [None] * len(records)
    scores = np.abs(logs - logs.mean()) / std
    return ["length_outlier" if s > z else None for s in scores]


def _apply(
    report: DataReport,
    rejects: list[Reject],
    step: str,
    records: list[Record],
    verdicts: Sequence[str | None],
) -> list[Record]:
    """Keep records whose verdict is None; the others become rejects with that reason."""
    kept = [r for r, v in zip(records, verdicts, strict=True) if v is None]
    rejects += [Reject.of(r, v) for r, v in zip(records, verdicts, strict=True) if v is not None]
    report.step(step, len(records), len(kept))
    return kept


def _write(
    out_dir: Path, train: list[Record], val: list[Record], rejects: list[Reject], report: DataReport
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.jsonl", train), ("val.jsonl", val)):
        _write_jsonl(
            out_dir / name,
            ({"text": r.text, "source": r.source, "line": r.line, "meta": r.meta} for r in part),
        )
    _write_jsonl(out_dir / "rejects.jsonl", (asdict(r) for r in rejects))
    (out_dir / "report.json").write_text(report.model_dump_json(indent=2) + "\n")


def _write_jsonl(path: Path, rows: Iterable[dict[str, object]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]
