"""Duplicate removal: exact (normalised text) and near (MinHash LSH on word shingles).

Records are visited in order of their own SHA-256, so which copy survives never depends on the
order of the input, and neither does the dataset hash.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

from datasketch import MinHash, MinHashLSH

from trainer.data.records import Record

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, stripped: what "the same text" means."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def exact_duplicates(records: Iterable[Record]) -> list[bool]:
    """For each record, whether an earlier one has the same normalised text."""
    seen: set[bytes] = set()
    flags = []
    for record in records:
        key = hashlib.sha256(normalise(record.text).encode()).digest()
        flags.append(key in seen)
        seen.add(key)
    return flags


def _signature(text: str, *, num_perm: int, shingle: int) -> MinHash:
    words = _WORD.findall(text.lower())
    grams = {" ".join(words[i : i + shingle]) for i in range(max(1, len(words) - shingle + 1))}
    signature = MinHash(num_perm=num_perm, seed=1)
    signature.update_batch([g.encode() for g in grams])
    return signature


def near_duplicates(
    records: Iterable[Record], *, threshold: float, num_perm: int = 128, shingle: int = 5
) -> list[bool]:
    """For each record, whether its estimated Jaccard similarity (word 5-gram shingles) to an
    earlier kept record reaches `threshold`."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    flags = []
    for index, record in enumerate(records):
        signature = _signature(record.text, num_perm=num_perm, shingle=shingle)
        duplicate = bool(lsh.query(signature))
        if not duplicate:
            lsh.insert(str(index), signature)
        flags.append(duplicate)
    return flags
