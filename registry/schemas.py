"""Pydantic views of registry rows: what the API returns and the CLI prints as JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from registry.manifest import ArtifactRecord, VersionRef
from registry.tables import AliasEvent, Model, ModelVersion

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of an ordered listing; pass `next_cursor` back to get the next page."""

    items: list[T]
    next_cursor: str | None = None


class ModelPublic(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    created_at: datetime
    last_version: int

    @classmethod
    def of(cls, row: Model) -> ModelPublic:
        return cls(
            name=row.name,
            description=row.description,
            created_at=row.created_at,
            last_version=row.last_version,
        )


class VersionPublic(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    version: int
    status: str
    status_reason: str
    dataset_sha256: str
    dataset_uri: str
    data_report: dict[str, Any]
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    artifacts: list[ArtifactRecord]
    code_revision: str
    parent: VersionRef | None
    tags: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: ModelVersion) -> VersionPublic:
        parent = (
            VersionRef(model=row.parent.model.name, version=row.parent.version)
            if row.parent is not None
            else None
        )
        return cls(
            model=row.model.name,
            version=row.version,
            status=row.status,
            status_reason=row.status_reason,
            dataset_sha256=row.dataset_sha256,
            dataset_uri=row.dataset_uri,
            data_report=row.data_report,
            hyperparameters=row.hyperparameters,
            metrics=row.metrics,
            artifacts=[
                ArtifactRecord(path=a.path, format=a.format, size=a.size, sha256=a.sha256)
                for a in row.artifacts
            ],
            code_revision=row.code_revision,
            parent=parent,
            tags=row.tags,
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class AliasEventPublic(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    model: str
    alias: str
    action: str
    from_version: int | None
    from_weight: int | None
    to_version: int | None
    weight: int | None
    actor: str
    reason: str
    created_at: datetime

    @classmethod
    def of(cls, row: AliasEvent, model: str) -> AliasEventPublic:
        return cls(
            id=row.id,
            model=model,
            alias=row.alias,
            action=row.action,
            from_version=row.from_version,
            from_weight=row.from_weight,
            to_version=row.to_version,
            weight=row.weight,
            actor=row.actor,
            reason=row.reason,
            created_at=row.created_at,
        )


class AliasState(BaseModel):
    """Where one alias points (at some instant) and the event that put it there."""

    model_config = ConfigDict(frozen=True)

    alias: str
    version: int
    weight: int | None = Field(description="Traffic share 0-100 for canary; None for production.")
    since: datetime
    event_id: int


class ModelState(BaseModel):
    """A model's aliases at an instant, with the versions they name (what served traffic)."""

    model: str
    at: datetime
    aliases: list[AliasState]
    versions: list[VersionPublic]
