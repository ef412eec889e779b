"""Reading raw records from JSONL files, text files, directories and globs.

- `*.jsonl`: one JSON object per line; `text` is the record, other fields are metadata.
- any other file (source code, `.txt`, `.md`, ...): the whole file is one record.
- a directory: every file below it with a known text suffix, in sorted order.
- a glob (`data/**/*.py`): every matching file.
- nothing given: the Python standard library of the running interpreter (`*.py`), without
  its tests, codec tables and vendored packages, which make poor training text.

Reading never stops at a bad record: undecodable bytes, bad JSON and a missing or non-string
`text` become `Reject`s with the file and line. `max_chars` caps the total text read; files are
taken in the order of the SHA-256 of their path, so a capped read is deterministic and spread
across the tree rather than the first directories alphabetically.
"""

from __future__ import annotations

import glob
import hashlib
import json
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainer.data.records import Record, Reject

TEXT_SUFFIXES = {
    ".py",
    ".txt",
    ".md",
    ".rst",
    ".jsonl",
    ".json",
    ".toml",
    ".cfg",
    ".c",
    ".h",
    ".js",
    ".ts",
}
STDLIB_EXCLUDED = {
    "test",
    "tests",
    "idle_test",
    "encodings",
    "site-packages",
    "dist-packages",
    "idlelib",
    "lib2to3",
    "__pycache__",
    "turtledemo",
    "ensurepip",
    "pydoc_data",
}


class InputError(ValueError):
    """An input path or glob that names nothing readable."""


@dataclass(frozen=True)
class Inputs:
    files: list[Path]
    uri: str


def resolve_inputs(inputs: Sequence[str | Path] | None) -> Inputs:
    """The files to read and a URI describing them (recorded with the version)."""
    if not inputs:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        found = [
            p
            for p in stdlib.rglob("*.py")
            if not STDLIB_EXCLUDED & set(p.relative_to(stdlib).parts[:-1])
        ]
        version = ".".join(map(str, sys.version_info[:3]))
        return Inputs(files=sorted(found), uri=f"python-stdlib:{version}:{stdlib}")
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        else:
            matches = sorted(
                Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file()
            )
            if not matches:
                raise InputError(
                    f"input {item!s} is not a file, a directory or a glob that matches files"
                )
            files += matches
    unique = sorted({f.resolve() for f in files})
    return Inputs(
        files=unique, uri=" ".join(f"file://{Path(i).expanduser().resolve()}" for i in inputs)
    )


def read_records(files: Sequence[Path], *, max_chars: int = 0) -> Iterator[Record | Reject]:
    """Records and rejects from `files`; stop after `max_chars` characters when it is set."""
    order = (
        sorted(files, key=lambda p: hashlib.sha256(str(p).encode()).hexdigest())
        if max_chars
        else files
    )
    total = 0
    for path in order:
        for item in _read_file(path):
            yield item
            if isinstance(item, Record):
                total += len(item.text)
        if max_chars and total >= max_chars:
            return


def _read_file(path: Path) -> Iterator[Record | Reject]:
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        yield Reject(source=source, line=0, reason="unreadable", excerpt=str(exc)[:80])
        return
    if path.suffix == ".jsonl":
        yield from _read_jsonl(source, raw)
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        yield Reject(source=source, line=0, reason="invalid_utf8")
        return
    yield Record(text=text, source=source, line=0)


def _read_jsonl(source: str, raw: bytes) -> Iterator[Record | Reject]:
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError:
            yield Reject(source=source, line=number, reason="invalid_utf8")
            continue
        try:
            value = json.loads(decoded)
        except json.JSONDecodeError:
            yield Reject(source=source, line=number, reason="invalid_json", excerpt=decoded[:80])
            continue
        if not isinstance(value, dict) or "text" not in value:
            yield Reject(source=source, line=number, reason="missing_text", excerpt=decoded[:80])
            continue
        text = value.pop("text")
        if not isinstance(text, str):
            yield Reject(source=source, line=number, reason="text_not_string", excerpt=decoded[:80])
            continue
        yield Record(text=text, source=source, line=number, meta=value)
