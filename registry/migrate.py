"""Applying and checking the registry schema (Alembic, driven from code, no alembic.ini)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from registry.db import RegistryDatabase, translate_errors
from registry.errors import SchemaNotCurrent


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", "registry:migrations")
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise SchemaNotCurrent("the registry has no migrations")
    return head


def current_revision(db: RegistryDatabase) -> str | None:
    with translate_errors(db), db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(db: RegistryDatabase) -> str:
    """Migrate the database to the newest schema (idempotent); return the revision."""
    config = _config()
    with translate_errors(db), db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return head_revision()


def check_schema(db: RegistryDatabase) -> None:
    """Raise `SchemaNotCurrent` unless the database is at this code's schema revision."""
    current, head = current_revision(db), head_revision()
    if current != head:
        state = "not initialised" if current is None else f"at revision {current}, not {head}"
        raise SchemaNotCurrent(
            f"registry database {db.safe_url} is {state}: run `python -m registry init`"
        )
