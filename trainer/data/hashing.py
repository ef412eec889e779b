"""The dataset hash and the train/validation split, both independent of input order.

Dataset hash: SHA-256 over the kept records sorted by their own SHA-256, each written as its
UTF-8 length (8 bytes, big-endian) followed by its UTF-8 bytes. Metadata is not hashed: the
hash identifies the text a model was trained on. Any change to a kept record changes it.

Split: a record goes to validation when the first 8 hex digits of its SHA-256, modulo 10,000,
fall below `val_fraction * 10,000`. With at least two records both sides are non-empty: if one
side would be empty, the record whose key lies nearest to the boundary moves over.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from trainer.data.records import Record

_BUCKETS = 10_000


def dataset_sha256(records: Sequence[Record]) -> str:
    digest = hashlib.sha256()
    for text in sorted(
        (r.text.encode("utf-8") for r in records), key=lambda b: hashlib.sha256(b).digest()
    ):
        digest.update(len(text).to_bytes(8, "big"))
        digest.update(text)
    return digest.hexdigest()


def _bucket(record: Record) -> int:
    return int(record.sha256[:8], 16) % _BUCKETS


def split(records: Sequence[Record], *, val_fraction: float) -> tuple[list[Record], list[Record]]:
    """(train, validation), each in canonical (SHA-256) order."""
    ordered = sorted(records, key=lambda r: r.sha256)
    cut = round(val_fraction * _BUCKETS)
    train = [r for r in ordered if _bucket(r) >= cut]
    val = [r for r in ordered if _bucket(r) < cut]
    if len(ordered) >= 2 and not val:
        mover = min(train, key=_bucket)
        train.remove(mover)
        val.append(mover)
    elif len(ordered) >= 2 and not train:
        mover = max(val, key=_bucket)
        val.remove(mover)
        train.append(mover)
    return train, val
