"""The unit the pipeline moves: a record's text, where it came from, and its metadata."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Record:
    text: str
    source: str  # file the record came from
    line: int  # 1-based line for JSONL records; 0 for whole-file records
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Reject:
    """A record that did not make it, and why (a stable reason code)."""

    source: str
    line: int
    reason: str
    excerpt: str = ""

    @classmethod
    def of(cls, record: Record, reason: str) -> Reject:
        return cls(source=record.source, line=record.line, reason=reason, excerpt=record.text[:80])
