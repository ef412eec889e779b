"""Initial registry schema: models, versions, artifacts, append-only alias events.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from registry.tables import BigId, UTCDateTime

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

_PG_APPEND_ONLY = """
CREATE FUNCTION tollgate_alias_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'alias_events is append-only: % refused', TG_OP;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER alias_events_append_only BEFORE UPDATE OR DELETE ON alias_events
    FOR EACH ROW EXECUTE FUNCTION tollgate_alias_events_append_only();
"""
_SQLITE_APPEND_ONLY = [
    """CREATE TRIGGER alias_events_no_update BEFORE UPDATE ON alias_events
       BEGIN SELECT RAISE(ABORT, 'alias_events is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER alias_events_no_delete BEFORE DELETE ON alias_events
       BEGIN SELECT RAISE(ABORT, 'alias_events is append-only: DELETE refused'); END""",
]


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_version", sa.Integer(), nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("model_id", BigId, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=False),
        sa.Column("dataset_sha256", sa.String(64), nullable=False),
        sa.Column("dataset_uri", sa.Text(), nullable=False),
        sa.Column("data_report", sa.JSON(), nullable=False),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("code_revision", sa.String(64), nullable=False),
        sa.Column("parent_id", BigId, sa.ForeignKey("model_versions.id"), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
        sa.CheckConstraint(
            "status IN ('registering', 'ready', 'failed', 'archived')",
            name="ck_model_versions_status",
        ),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("version_id", BigId, sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("format", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.UniqueConstraint("version_id", "path", name="uq_artifacts_version_path"),
    )
    op.create_table(
        "alias_events",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("model_id", BigId, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("alias", sa.String(32), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("from_weight", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("weight", sa.Integer(), nullable=True),
        sa.Column("undo_event_id", BigId, sa.ForeignKey("alias_events.id"), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id", "from_version"],
            ["model_versions.model_id", "model_versions.version"],
            name="fk_alias_events_from_version",
        ),
        sa.ForeignKeyConstraint(
            ["model_id", "to_version"],
            ["model_versions.model_id", "model_versions.version"],
            name="fk_alias_events_to_version",
        ),
        sa.CheckConstraint("weight IS NULL OR (weight >= 0 AND weight <= 100)", name="ck_weight"),
        sa.CheckConstraint("action IN ('set', 'clear', 'rollback')", name="ck_action"),
    )
    op.create_index("ix_alias_events_model_alias_id", "alias_events", ["model_id", "alias", "id"])
    op.create_index("ix_alias_events_model_created", "alias_events", ["model_id", "created_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_APPEND_ONLY)
    else:
        for statement in _SQLITE_APPEND_ONLY:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER alias_events_append_only ON alias_events")
        op.execute("DROP FUNCTION tollgate_alias_events_append_only()")
    op.drop_table("alias_events")
    op.drop_table("artifacts")
    op.drop_table("model_versions")
    op.drop_table("models")
