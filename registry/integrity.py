"""Integrity: check a version's files against the record, and rebuild the record from disk.

`verify_version` re-hashes every file the registry recorded for a version and reports each
missing, resized, altered or unrecorded file, and a manifest that disagrees with the record.
`rebuild_from_repository` recreates registry rows from `<repository>/<model>/<version>/
manifest.json` after the database is lost; a version whose files do not match its manifest
is recorded as `failed` with the reason, never as `ready`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.catalog import ensure_model, find_model, find_version, lock_model
from registry.errors import ManifestError
from registry.manifest import MANIFEST_NAME, ArtifactRecord, Manifest, read_manifest, sha256_file
from registry.tables import Artifact, ModelVersion, VersionStatus


class ProblemKind(StrEnum):
    MISSING = "missing"
    SIZE = "size_mismatch"
    SHA256 = "sha256_mismatch"
    UNRECORDED = "unrecorded_file"
    MANIFEST = "manifest_mismatch"


class Problem(BaseModel):
    path: str
    kind: ProblemKind
    expected: str = ""
    actual: str = ""


class VerifyReport(BaseModel):
    model: str
    version: int
    status: str
    files_checked: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_files(version_dir: Path, artifacts: list[ArtifactRecord]) -> list[Problem]:
    """Compare a version directory with the artifact records it should hold."""
    problems: list[Problem] = []
    for artifact in artifacts:
        path = version_dir / artifact.path
        if not path.is_file():
            problems.append(Problem(path=artifact.path, kind=ProblemKind.MISSING))
            continue
        size = path.stat().st_size
        if size != artifact.size:
            problems.append(
                Problem(
                    path=artifact.path,
                    kind=ProblemKind.SIZE,
                    expected=str(artifact.size),
                    actual=str(size),
                )
            )
            continue
        digest = sha256_file(path)
        if digest != artifact.sha256:
            problems.append(
                Problem(
                    path=artifact.path,
                    kind=ProblemKind.SHA256,
                    expected=artifact.sha256,
                    actual=digest,
                )
            )
    recorded = {a.path for a in artifacts} | {MANIFEST_NAME}
    if version_dir.is_dir():
        for path in sorted(p for p in version_dir.rglob("*") if p.is_file()):
            relative = path.relative_to(version_dir).as_posix()
            if relative not in recorded and "__pycache__" not in path.parts:
                problems.append(Problem(path=relative, kind=ProblemKind.UNRECORDED))
    return problems


def verify_version(*, session: Session, repository: Path, model: str, version: int) -> VerifyReport:
    """Re-hash one version's files on disk against the registry's record of them."""
    row = find_version(session, model, version)
    artifacts = [
        ArtifactRecord(path=a.path, format=a.format, size=a.size, sha256=a.sha256)
        for a in row.artifacts
    ]
    version_dir = repository / model / str(version)
    problems = check_files(version_dir, artifacts)
    if artifacts:
        problems.extend(_manifest_problems(version_dir, row, artifacts))
    return VerifyReport(
        model=model,
        version=version,
        status=row.status,
        files_checked=len(artifacts),
        problems=problems,
    )


def versions_to_verify(*, session: Session, model: str, batch: int = 100) -> Iterator[int]:
    """Numbers of a model's `ready` versions, newest first, read `batch` rows at a time."""
    model_id = find_model(session, model).id
    before: int | None = None
    while True:
        query = (
            select(ModelVersion.version)
            .where(ModelVersion.model_id == model_id, ModelVersion.status == VersionStatus.READY)
            .order_by(ModelVersion.version.desc())
            .limit(batch)
        )
        if before is not None:
            query = query.where(ModelVersion.version < before)
        numbers = list(session.scalars(query))
        yield from numbers
        if len(numbers) < batch:
            return
        before = numbers[-1]


def _manifest_problems(
    version_dir: Path, row: ModelVersion, artifacts: list[ArtifactRecord]
) -> list[Problem]:
    try:
        manifest = read_manifest(version_dir)
    except ManifestError as exc:
        return [Problem(path=MANIFEST_NAME, kind=ProblemKind.MANIFEST, actual=str(exc))]
    expected = {(a.path, a.sha256) for a in artifacts}
    actual = {(a.path, a.sha256) for a in manifest.artifacts}
    problems = []
    if expected != actual:
        problems.append(
            Problem(
                path=MANIFEST_NAME,
                kind=ProblemKind.MANIFEST,
                expected="artifacts as recorded in the registry",
                actual=f"differs in {sorted(p for p, _ in expected ^ actual)}",
            )
        )
    if manifest.dataset.sha256 != row.dataset_sha256:
        problems.append(
            Problem(
                path=MANIFEST_NAME,
                kind=ProblemKind.MANIFEST,
                expected=f"dataset {row.dataset_sha256}",
                actual=f"dataset {manifest.dataset.sha256}",
            )
        )
    return problems


class RebuildOutcome(StrEnum):
    CREATED = "created"
    CREATED_FAILED = "created_failed"
    EXISTS = "exists"
    SKIPPED = "skipped"


class RebuildEntry(BaseModel):
    path: str
    outcome: RebuildOutcome
    model: str = ""
    version: int = 0
    detail: str = ""


@dataclass
class RebuildReport:
    entries: list[RebuildEntry] = field(default_factory=list)

    def count(self, outcome: RebuildOutcome) -> int:
        return sum(1 for e in self.entries if e.outcome is outcome)


def rebuild_from_repository(*, session: Session, repository: Path) -> RebuildReport:
    """Recreate missing registry rows from every `<model>/<version>/manifest.json`.

    Existing rows are left as they are. Lineage links are restored after all versions exist,
    so a parent may come from any model. Aliases are not in manifests and are not rebuilt.
    """
    report = RebuildReport()
    created: list[tuple[ModelVersion, Manifest]] = []
    for version_dir in _version_dirs(repository):
        where = version_dir.relative_to(repository).as_posix()
        try:
            manifest = read_manifest(version_dir)
        except ManifestError as exc:
            report.entries.append(
                RebuildEntry(path=where, outcome=RebuildOutcome.SKIPPED, detail=str(exc))
            )
            continue
        if (manifest.model, str(manifest.version)) != (version_dir.parent.name, version_dir.name):
            detail = f"manifest names {manifest.model} v{manifest.version}, not its directory"
            report.entries.append(
                RebuildEntry(path=where, outcome=RebuildOutcome.SKIPPED, detail=detail)
            )
            continue
        entry, row = _restore(session, version_dir, manifest)
        entry.path = where
        report.entries.append(entry)
        if row is not None:
            created.append((row, manifest))
    for row, manifest in created:
        if manifest.parent is not None:
            parent = session.scalars(
                select(ModelVersion)
                .join(ModelVersion.model)
                .where(ModelVersion.version == manifest.parent.version)
                .where(ModelVersion.model.has(name=manifest.parent.model))
            ).first()
            row.parent_id = parent.id if parent is not None else None
    session.flush()
    return report


def _version_dirs(repository: Path) -> list[Path]:
    if not repository.is_dir():
        return []
    found = [
        d
        for model_dir in repository.iterdir()
        if model_dir.is_dir()
        for d in model_dir.iterdir()
        if d.is_dir() and d.name.isdigit()
    ]
    return sorted(found, key=lambda d: (d.parent.name, int(d.name)))


def _restore(
    session: Session, version_dir: Path, manifest: Manifest
) -> tuple[RebuildEntry, ModelVersion | None]:
    ensure_model(session=session, name=manifest.model, description=manifest.description)
    model_row = lock_model(session, manifest.model)
    existing = session.scalars(
        select(ModelVersion).where(
            ModelVersion.model_id == model_row.id, ModelVersion.version == manifest.version
        )
    ).first()
    base = RebuildEntry(
        path="", outcome=RebuildOutcome.EXISTS, model=manifest.model, version=manifest.version
    )
    if existing is not None:
        return base, None
    problems = check_files(version_dir, manifest.artifacts)
    status, reason = VersionStatus.READY, ""
    if problems:
        status = VersionStatus.FAILED
        reason = "rebuilt from a manifest whose files do not match: " + "; ".join(
            f"{p.path} {p.kind.value}" for p in problems
        )
    row = ModelVersion(
        model_id=model_row.id,
        version=manifest.version,
        status=status.value,
        status_reason=reason,
        dataset_sha256=manifest.dataset.sha256,
        dataset_uri=manifest.dataset.uri,
        data_report=manifest.dataset.report,
        hyperparameters=manifest.hyperparameters,
        metrics=manifest.metrics,
        code_revision=manifest.code_revision,
        tags=dict(manifest.tags),
        created_by=manifest.created_by,
        created_at=manifest.created_at,
        updated_at=manifest.created_at,
    )
    session.add(row)
    session.flush()
    session.add_all(
        Artifact(version_id=row.id, path=a.path, format=a.format, size=a.size, sha256=a.sha256)
        for a in manifest.artifacts
    )
    model_row.last_version = max(model_row.last_version, manifest.version)
    outcome = RebuildOutcome.CREATED_FAILED if problems else RebuildOutcome.CREATED
    return base.model_copy(update={"outcome": outcome, "detail": reason}), row
