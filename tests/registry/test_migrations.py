"""The hand-written migrations build exactly the schema the tables declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from registry import migrate
from registry.db import RegistryDatabase
from registry.tables import Base


def test_migrations_match_the_declared_tables(db: RegistryDatabase) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent_and_check_passes(db: RegistryDatabase) -> None:
    assert migrate.upgrade(db) == migrate.head_revision()
    assert migrate.current_revision(db) == migrate.head_revision()
    migrate.check_schema(db)
