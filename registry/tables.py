"""SQLAlchemy 2.0 tables of the registry database: models, versions, artifacts and alias
events, and two tables the gateway owns.

Alias state is never stored in place: it is derived from the append-only `alias_events`
table (the newest event per alias is the current state; the newest event at or before an
instant is the state at that instant). Database triggers refuse UPDATE and DELETE on it.

`api_keys` (`gateway.identity.api_keys`) and `idempotency_keys` (`gateway.control.alias_changes`)
belong to the gateway. They live in this database, under this module's metadata, so that one
Alembic chain migrates everything Tollgate keeps and an alias change commits with its
idempotency record in one transaction; the registry's own functions never read them.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the registry; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class VersionStatus(enum.StrEnum):
    REGISTERING = "registering"
    READY = "ready"
    FAILED = "failed"
    ARCHIVED = "archived"


class Alias(enum.StrEnum):
    PRODUCTION = "production"
    CANARY = "canary"


class AliasAction(enum.StrEnum):
    SET = "set"
    CLEAR = "clear"
    ROLLBACK = "rollback"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: UTCDateTime}


class Model(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Highest version number ever allocated; numbers are never reused, even if rows vanish.
    last_version: Mapped[int] = mapped_column(Integer, default=0)

    versions: Mapped[list[ModelVersion]] = relationship(back_populates="model", lazy="raise")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
        CheckConstraint(
            "status IN ('registering', 'ready', 'failed', 'archived')",
            name="ck_model_versions_status",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=VersionStatus.REGISTERING.value)
    status_reason: Mapped[str] = mapped_column(Text, default="")
    dataset_sha256: Mapped[str] = mapped_column(String(64))
    dataset_uri: Mapped[str] = mapped_column(Text, default="")
    data_report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    code_revision: Mapped[str] = mapped_column(String(64), default="")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    model: Mapped[Model] = relationship(back_populates="versions", lazy="joined")
    parent: Mapped[ModelVersion | None] = relationship(remote_side=[id], lazy="joined")
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="version", lazy="selectin", order_by="Artifact.path"
    )


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("version_id", "path", name="uq_artifacts_version_path"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    path: Mapped[str] = mapped_column(String(512))
    format: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))

    version: Mapped[ModelVersion] = relationship(back_populates="artifacts", lazy="raise")


class AliasEvent(Base):
    """One change of one alias; rows are only ever inserted."""

    __tablename__ = "alias_events"
    __table_args__ = (
        ForeignKeyConstraint(
            ["model_id", "from_version"],
            ["model_versions.model_id", "model_versions.version"],
            name="fk_alias_events_from_version",
        ),
        ForeignKeyConstraint(
            ["model_id", "to_version"],
            ["model_versions.model_id", "model_versions.version"],
            name="fk_alias_events_to_version",
        ),
        CheckConstraint("weight IS NULL OR (weight >= 0 AND weight <= 100)", name="ck_weight"),
        CheckConstraint("action IN ('set', 'clear', 'rollback')", name="ck_action"),
        Index("ix_alias_events_model_alias_id", "model_id", "alias", "id"),
        Index("ix_alias_events_model_created", "model_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    alias: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(16))
    from_version: Mapped[int | None] = mapped_column(Integer)
    from_weight: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int | None] = mapped_column(Integer)
    weight: Mapped[int | None] = mapped_column(Integer)
    # The event whose state a rollback from this event returns to (None: nothing earlier).
    undo_event_id: Mapped[int | None] = mapped_column(ForeignKey("alias_events.id"))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# The gateway's tables (see the module docstring).


class ApiKey(Base):
    """A gateway API key: only a hash of its secret is stored; revocation keeps the row."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)  # public part of the key
    name: Mapped[str] = mapped_column(String(128))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(256))  # space-separated
    # Token-bucket limits; None means the gateway's defaults.
    requests_capacity: Mapped[int | None] = mapped_column(Integer)
    requests_per_s: Mapped[float | None] = mapped_column(Float)
    tokens_capacity: Mapped[int | None] = mapped_column(Integer)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_by: Mapped[str] = mapped_column(String(128), default="")


class IdempotencyKey(Base):
    """The answer to an admin change made with an `Idempotency-Key`, kept for replays."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("actor", "key", name="uq_idempotency_actor_key"),
        Index("ix_idempotency_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    actor: Mapped[str] = mapped_column(String(128))
    key: Mapped[str] = mapped_column(String(255))
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
