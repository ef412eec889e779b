"""The `manifest.json` written into every published version directory.

The manifest is part of the design: it holds everything needed to rebuild the version's
registry rows (`python -m registry rebuild`) and to check its files (`verify`). It lists
every file of the version directory except itself, with size and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from registry.errors import ManifestError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
_CHUNK = 1 << 20


class ArtifactRecord(BaseModel):
    """One file of a version: path relative to the version directory, format, size, SHA-256."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1, max_length=512)
    format: str = Field(min_length=1, max_length=64)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class VersionRef(BaseModel):
    """A reference to a version of a (possibly different) model, e.g. a distillation teacher."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    version: int = Field(ge=1)


class DatasetRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    uri: str = ""
    report: dict[str, Any] = Field(default_factory=dict)


class Manifest(BaseModel):
    """Contents of `model_repository/<model>/<version>/manifest.json`."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = MANIFEST_FORMAT
    model: str
    version: int = Field(ge=1)
    created_at: datetime
    created_by: str = ""
    code_revision: str = ""
    description: str = ""
    dataset: DatasetRecord
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    parent: VersionRef | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    artifacts: list[ArtifactRecord]


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_file(version_dir: Path, relative: str, fmt: str) -> ArtifactRecord:
    """Hash and size one file of a version directory into an `ArtifactRecord`."""
    path = version_dir / relative
    return ArtifactRecord(
        path=relative, format=fmt, size=path.stat().st_size, sha256=sha256_file(path)
    )


def write_manifest(version_dir: Path, manifest: Manifest) -> Path:
    """Write the manifest durably (temporary file, fsync, rename) and return its path."""
    target = version_dir / MANIFEST_NAME
    tmp = target.with_suffix(".json.tmp")
    payload = manifest.model_dump_json(indent=2) + "\n"
    with tmp.open("w", encoding="utf-8") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(target)
    return target


def read_manifest(version_dir: Path) -> Manifest:
    """Read and validate a version directory's manifest; raise `ManifestError` if unusable."""
    path = version_dir / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: no manifest") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc})") from exc
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{path}: invalid manifest at {where}: {first['msg']}") from exc
    if manifest.format_version != MANIFEST_FORMAT:
        raise ManifestError(f"{path}: unsupported manifest format {manifest.format_version}")
    return manifest
