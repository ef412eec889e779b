"""Alembic environment: runs migrations on the connection that `registry.migrate` passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from registry.tables import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run registry migrations through `python -m registry init`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
