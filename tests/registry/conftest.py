"""Registry fixtures: a migrated registry on SQLite and on a fresh PostgreSQL schema."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from registry import aliases, catalog, migrate
from registry.config import RegistrySettings
from registry.db import RegistryDatabase, connect, writing
from registry.manifest import ArtifactRecord, VersionRef
from registry.schemas import VersionPublic
from tests.services import POSTGRES_URL

DATASET = "d" * 64


def postgres_schema_url() -> Iterator[str]:
    """A URL whose connections use a new, empty schema; the schema is dropped afterwards."""
    schema = f"tollgate_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistrySettings]:
    """Settings for a registry on each backend, with its own var dir and model repository."""
    base: dict[str, Any] = {"var_dir": tmp_path / "var", "model_repository": tmp_path / "repo"}
    if request.param == "sqlite":
        yield RegistrySettings(**base)
        return
    for url in postgres_schema_url():
        yield RegistrySettings(**base, database_url=url)


def migrated(settings: RegistrySettings) -> Iterator[RegistryDatabase]:
    """A registry connected and migrated to the newest schema; disposed of afterwards (the body
    of a `db` fixture)."""
    database = connect(settings)
    migrate.upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def db(settings: RegistrySettings) -> Iterator[RegistryDatabase]:
    yield from migrated(settings)


ReadyFactory = Callable[..., VersionPublic]


def ready_version(
    db: RegistryDatabase, model: str = "demo", *, parent: VersionRef | None = None, **fields: Any
) -> VersionPublic:
    """Register and complete a version (artifacts are records only, no files)."""
    with writing(db) as session:
        v = catalog.register_version(
            session=session, model=model, dataset_sha256=DATASET, parent=parent, **fields
        )
    with writing(db) as session:
        return catalog.complete_version(
            session=session,
            model=model,
            version=v.version,
            artifacts=[ArtifactRecord(path="model.onnx", format="onnx", size=1, sha256="0" * 64)],
            metrics={"val_perplexity": 42.0},
        )


def point(
    session: Session, model: str, alias: str, version: int, weight: int | None = None
) -> None:
    """Point `model`'s `alias` at `version` (a canary with `weight`), as a tester would."""
    aliases.set_alias(
        session=session,
        model=model,
        alias=alias,
        version=version,
        weight=weight,
        actor="tester",
        reason="test",
    )


@pytest.fixture
def make_ready(db: RegistryDatabase) -> ReadyFactory:
    """`ready_version` on this test's registry."""
    return functools.partial(ready_version, db)
