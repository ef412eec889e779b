"""Models and their versions: create, register, complete, fail, archive, read, list.

Functions take a `session` from `registry.db.writing` / `reading`; the caller's `with` block
is the transaction. Writers lock the model row, so version numbers are allocated one at a
time per model and never collide.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from registry.alias_state import aliases_of
from registry.errors import InvalidInput, InvalidState, ModelNotFound, VersionNotFound
from registry.manifest import ArtifactRecord, VersionRef
from registry.pagination import DEFAULT_LIMIT, check_limit, int_cursor
from registry.schemas import ModelPublic, Page, VersionPublic
from registry.tables import Artifact, Model, ModelVersion, VersionStatus, utcnow

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def validate_model_name(name: str) -> str:
    """Model names: 1-64 lowercase letters, digits, `-` and `_`, starting with a letter or digit."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid model name {name!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def ensure_model(*, session: Session, name: str, description: str = "") -> ModelPublic:
    """Create the model if it does not exist (safe under concurrency) and return it."""
    validate_model_name(name)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Model).values(
        name=name, description=description, created_at=utcnow(), last_version=0
    )
    session.execute(statement.on_conflict_do_nothing(index_elements=["name"]))
    return ModelPublic.of(find_model(session, name))


def get_model(*, session: Session, name: str) -> ModelPublic:
    return ModelPublic.of(find_model(session, name))


def list_models(
    *, session: Session, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[ModelPublic]:
    """Models ordered by name; `cursor` is the last name of the previous page."""
    query = select(Model).order_by(Model.name).limit(check_limit(limit) + 1)
    if cursor is not None:
        query = query.where(Model.name > cursor)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        items=[ModelPublic.of(r) for r in rows], next_cursor=rows[-1].name if more else None
    )


def register_version(
    *,
    session: Session,
    model: str,
    dataset_sha256: str,
    dataset_uri: str = "",
    data_report: Mapping[str, Any] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    code_revision: str = "",
    parent: VersionRef | None = None,
    tags: Mapping[str, str] | None = None,
    created_by: str = "",
    description: str = "",
) -> VersionPublic:
    """Allocate the model's next version number and record it as `registering`.

    The model is created if it is new. Commit promptly: the number is reserved from then on,
    and the version becomes `ready` only through `complete_version`.
    """
    if not _SHA256.fullmatch(dataset_sha256):
        raise InvalidInput(
            f"dataset_sha256 must be 64 lowercase hex digits, got {dataset_sha256!r}"
        )
    ensure_model(session=session, name=model, description=description)
    row = lock_model(session, model)
    parent_id = find_version(session, parent.model, parent.version).id if parent else None
    row.last_version += 1
    version = ModelVersion(
        model_id=row.id,
        version=row.last_version,
        status=VersionStatus.REGISTERING.value,
        dataset_sha256=dataset_sha256,
        dataset_uri=dataset_uri,
        data_report=dict(data_report or {}),
        hyperparameters=dict(hyperparameters or {}),
        metrics={},
        code_revision=code_revision,
        parent_id=parent_id,
        tags=dict(tags or {}),
        created_by=created_by,
    )
    session.add(version)
    session.flush()
    return get_version(session=session, model=model, version=version.version)


def complete_version(
    *,
    session: Session,
    model: str,
    version: int,
    artifacts: Sequence[ArtifactRecord],
    metrics: Mapping[str, Any] | None = None,
) -> VersionPublic:
    """Record a `registering` version's files and metrics and mark it `ready`."""
    lock_model(session, model)
    row = find_version(session, model, version)
    if row.status != VersionStatus.REGISTERING:
        raise InvalidState(
            f"{model} v{version} is {row.status}; only registering versions complete"
        )
    if not artifacts:
        raise InvalidInput(f"{model} v{version}: a ready version needs at least one artifact")
    paths = [a.path for a in artifacts]
    if len(set(paths)) != len(paths):
        raise InvalidInput(f"{model} v{version}: artifact paths repeat: {sorted(paths)}")
    session.add_all(
        Artifact(version_id=row.id, path=a.path, format=a.format, size=a.size, sha256=a.sha256)
        for a in artifacts
    )
    row.metrics = dict(metrics or {})
    row.status = VersionStatus.READY.value
    row.updated_at = utcnow()
    session.flush()
    session.expire(row, ["artifacts"])
    return VersionPublic.of(row)


def fail_version(*, session: Session, model: str, version: int, reason: str) -> VersionPublic:
    """Mark a `registering` version `failed`, keeping its number and the reason."""
    lock_model(session, model)
    row = find_version(session, model, version)
    if row.status != VersionStatus.REGISTERING:
        raise InvalidState(f"{model} v{version} is {row.status}; only registering versions fail")
    return _set_status(row, VersionStatus.FAILED, reason)


def archive_version(*, session: Session, model: str, version: int, reason: str) -> VersionPublic:
    """Retire a `ready` or `failed` version; refused while an alias points at it."""
    model_row = lock_model(session, model)
    row = find_version(session, model, version)
    if row.status not in {VersionStatus.READY, VersionStatus.FAILED}:
        raise InvalidState(f"{model} v{version} is {row.status}; only ready or failed archive")
    for state in aliases_of(session, model_id=model_row.id):
        if state.version == version:
            raise InvalidState(f"{model} v{version} is {state.alias}; move the alias first")
    return _set_status(row, VersionStatus.ARCHIVED, reason)


def get_version(*, session: Session, model: str, version: int) -> VersionPublic:
    return VersionPublic.of(find_version(session, model, version))


def list_versions(
    *,
    session: Session,
    model: str,
    status: VersionStatus | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[VersionPublic]:
    """A model's versions, newest first; `cursor` is the last version number seen."""
    model_row = find_model(session, model)
    query = (
        select(ModelVersion)
        .where(ModelVersion.model_id == model_row.id)
        .order_by(ModelVersion.version.desc())
        .limit(check_limit(limit) + 1)
    )
    if status is not None:
        query = query.where(ModelVersion.status == status.value)
    before = int_cursor(cursor)
    if before is not None:
        query = query.where(ModelVersion.version < before)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        items=[VersionPublic.of(r) for r in rows],
        next_cursor=str(rows[-1].version) if more else None,
    )


def lock_model(session: Session, name: str) -> Model:
    """Load a model row and hold its lock until the transaction ends (serializes writers)."""
    row = session.scalars(
        select(Model)
        .where(Model.name == name)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if row is None:
        raise ModelNotFound(f"no model named {name!r}")
    return row


def find_model(session: Session, name: str) -> Model:
    row = session.scalars(select(Model).where(Model.name == name)).first()
    if row is None:
        raise ModelNotFound(f"no model named {name!r}")
    return row


def find_version(session: Session, model: str, version: int) -> ModelVersion:
    model_row = find_model(session, model)
    row = session.scalars(
        select(ModelVersion).where(
            ModelVersion.model_id == model_row.id, ModelVersion.version == version
        )
    ).first()
    if row is None:
        raise VersionNotFound(f"model {model!r} has no version {version}")
    return row


def _set_status(row: ModelVersion, status: VersionStatus, reason: str) -> VersionPublic:
    row.status = status.value
    row.status_reason = reason
    row.updated_at = utcnow()
    return VersionPublic.of(row)
