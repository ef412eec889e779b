"""Atomic publish of a version into `model_repository/<model>/<version>/` and the registry.

The order makes every crash recoverable, and a later run recovers it:

1. `registered`: the registry allocates the number; the row is `registering`.
2. `staged`: files are copied into `<model>/.staging-<n>-<id>/`, fsynced, hashed, and
   `manifest.json` is written last.
3. `moved`: one `rename` makes `<model>/<n>/` appear whole (Triton never sees a partial one).
4. `ready`: the registry records the files' SHA-256s and marks the version `ready`.

A crash before 3 leaves a staging directory and a `registering` row: recovery deletes the
one and marks the other `failed`. A crash between 3 and 4 leaves complete files: recovery
re-hashes them against the manifest and completes the registration (or, if they do not match,
removes them and marks the version `failed`). So there is never a `ready` version without its
files, nor files that differ from the record. Publishes of one model hold a file lock, so
recovery never mistakes a publish in progress for a crashed one.
"""

from __future__ import annotations

import enum
import fcntl
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry import catalog
from registry.db import RegistryDatabase, reading, writing
from registry.errors import ManifestError, ModelNotFound
from registry.integrity import check_files
from registry.manifest import (
    ArtifactRecord,
    DatasetRecord,
    Manifest,
    VersionRef,
    describe_file,
    read_manifest,
    write_manifest,
)
from registry.schemas import VersionPublic
from registry.tables import VersionStatus

STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
LOCK_NAME = ".publish.lock"


class PublishStage(enum.StrEnum):
    REGISTERED = "registered"
    STAGED = "staged"
    MOVED = "moved"
    READY = "ready"


class PublishError(Exception):
    """Publishing failed; the message says what state it left and how it will be recovered."""


@dataclass(frozen=True)
class ArtifactSource:
    """A file to publish: where it is now and its format (e.g. `onnx`, `onnx-int8`)."""

    path: Path
    format: str


@dataclass(frozen=True)
class PublishRequest:
    model: str
    files: Mapping[str, ArtifactSource]
    dataset_sha256: str
    dataset_uri: str = ""
    data_report: Mapping[str, Any] = field(default_factory=dict)
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    code_revision: str = ""
    parent: VersionRef | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    created_by: str = "trainer"
    description: str = ""


StageHook = Callable[[PublishStage, int], None]


def publish(
    *,
    db: RegistryDatabase,
    repository: Path,
    request: PublishRequest,
    on_stage: StageHook | None = None,
) -> VersionPublic:
    """Publish `request.files` as the model's next version; return it once `ready`."""
    notify = on_stage or (lambda _stage, _version: None)
    _check_names(request.files)
    model_dir = repository / catalog.validate_model_name(request.model)
    with model_lock(model_dir):
        recover(db=db, repository=repository, model=request.model)
        with writing(db) as session:
            version = catalog.register_version(
                session=session,
                model=request.model,
                dataset_sha256=request.dataset_sha256,
                dataset_uri=request.dataset_uri,
                data_report=request.data_report,
                hyperparameters=request.hyperparameters,
                code_revision=request.code_revision,
                parent=request.parent,
                tags=request.tags,
                created_by=request.created_by,
                description=request.description,
            )
        number = version.version
        final = model_dir / str(number)
        staging = model_dir / f"{STAGING_PREFIX}{number}-{uuid.uuid4().hex[:8]}"
        try:
            notify(PublishStage.REGISTERED, number)
            artifacts = _stage(staging, request, version)
            notify(PublishStage.STAGED, number)
            if final.exists():
                raise PublishError(f"{final} already exists; run `python -m registry rebuild`")
            staging.rename(final)
            _fsync_dir(model_dir)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            with writing(db) as session:
                catalog.fail_version(
                    session=session,
                    model=request.model,
                    version=number,
                    reason=f"publish failed: {exc}",
                )
            raise
        notify(PublishStage.MOVED, number)
        # From here the files are complete: if recording fails, recovery completes it later.
        with writing(db) as session:
            ready = catalog.complete_version(
                session=session,
                model=request.model,
                version=number,
                artifacts=artifacts,
                metrics=request.metrics,
            )
        notify(PublishStage.READY, number)
        return ready


@dataclass
class RecoveryReport:
    actions: list[str] = field(default_factory=list)


def recover(*, db: RegistryDatabase, repository: Path, model: str) -> RecoveryReport:
    """Repair what a crashed publish of `model` left behind (call with the model lock held)."""
    report = RecoveryReport()
    model_dir = repository / model
    if model_dir.is_dir():
        for leftover in sorted(model_dir.glob(f"{STAGING_PREFIX}*")) + sorted(
            model_dir.glob(f"{TRASH_PREFIX}*")
        ):
            shutil.rmtree(leftover, ignore_errors=True)
            report.actions.append(f"removed leftover {leftover.name}")
    for version in _versions(db, model, VersionStatus.REGISTERING):
        final = model_dir / str(version.version)
        manifest = _intact_manifest(final, version) if final.is_dir() else None
        with writing(db) as session:
            if manifest is not None:
                catalog.complete_version(
                    session=session,
                    model=model,
                    version=version.version,
                    artifacts=manifest.artifacts,
                    metrics=manifest.metrics,
                )
                report.actions.append(
                    f"completed v{version.version}: its files were in place and intact"
                )
                continue
            _remove(final)
            catalog.fail_version(
                session=session,
                model=model,
                version=version.version,
                reason="publish was interrupted; cleaned up by a later run",
            )
            report.actions.append(f"marked v{version.version} failed: its publish was interrupted")
    for version in _versions(db, model, VersionStatus.FAILED):
        final = model_dir / str(version.version)
        if final.exists():
            _remove(final)
            report.actions.append(f"removed files of failed v{version.version}")
    return report


@contextmanager
def model_lock(model_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on one model's directory of the repository."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with (model_dir / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_names(files: Mapping[str, ArtifactSource]) -> None:
    if not files:
        raise PublishError("nothing to publish: no files given")
    for name, source in files.items():
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts or name == "manifest.json" or not parts:
            raise PublishError(f"invalid artifact name {name!r}")
        if not source.path.is_file():
            raise PublishError(f"artifact {name!r}: {source.path} is not a file")


def _stage(staging: Path, request: PublishRequest, version: VersionPublic) -> list[ArtifactRecord]:
    staging.mkdir(parents=True)
    artifacts = []
    for name, source in sorted(request.files.items()):
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.path, target)
        with target.open("rb") as f:
            os.fsync(f.fileno())
        artifacts.append(describe_file(staging, name, source.format))
    manifest = Manifest(
        model=request.model,
        version=version.version,
        created_at=version.created_at,
        created_by=request.created_by,
        code_revision=request.code_revision,
        description=request.description,
        dataset=DatasetRecord(
            sha256=request.dataset_sha256, uri=request.dataset_uri, report=dict(request.data_report)
        ),
        hyperparameters=dict(request.hyperparameters),
        metrics=dict(request.metrics),
        parent=request.parent,
        tags=dict(request.tags),
        artifacts=artifacts,
    )
    write_manifest(staging, manifest)
    _fsync_dir(staging)
    return artifacts


def _intact_manifest(final: Path, version: VersionPublic) -> Manifest | None:
    try:
        manifest = read_manifest(final)
    except ManifestError:
        return None
    same = (manifest.model, manifest.version, manifest.dataset.sha256) == (
        version.model,
        version.version,
        version.dataset_sha256,
    )
    return manifest if same and not check_files(final, manifest.artifacts) else None


def _versions(db: RegistryDatabase, model: str, status: VersionStatus) -> list[VersionPublic]:
    found: list[VersionPublic] = []
    cursor: str | None = None
    try:
        with reading(db) as session:
            while True:
                page = catalog.list_versions(
                    session=session, model=model, status=status, limit=100, cursor=cursor
                )
                found += page.items
                if page.next_cursor is None:
                    return found
                cursor = page.next_cursor
    except ModelNotFound:
        return []


def _remove(path: Path) -> None:
    """Delete a version directory so that it disappears at once (rename, then delete)."""
    if not path.exists():
        return
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
