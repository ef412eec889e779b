"""What one routing-table read costs a gateway replica, by registry size and database.

Every replica re-reads its routing table every `route_refresh_s` (2 s), off the event loop but
holding the interpreter while its Python runs. This builds throw-away registries of 1, 10 and
100 models (two ready versions each, production on one, a 10 % canary on the other), on SQLite
and, when it answers, on a fresh PostgreSQL schema, and times `RouteTable.reload` once the
versions are known: SQL statements, CPU and wall time per read.

    python -m bench.routes [--models 1,10,100] [--reads 20] [--postgres URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from bench import stop_cleanly_on_sigterm
from gateway.routing import RouteTable
from registry import aliases, catalog, migrate
from registry.config import RegistrySettings
from registry.db import RegistryDatabase, connect, writing
from registry.manifest import ArtifactRecord

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def fill(db: RegistryDatabase, models: int) -> None:
    """`models` models, each with v1 production and v2 a 10 % canary."""
    artifact = ArtifactRecord(path="model.onnx", format="onnx", size=1, sha256="0" * 64)
    hyperparameters = {"model": {"context_length": 256}}
    for m in range(models):
        name = f"model-{m:03d}"
        with writing(db) as session:
            for _ in range(2):
                v = catalog.register_version(
                    session=session,
                    model=name,
                    dataset_sha256="d" * 64,
                    hyperparameters=hyperparameters,
                )
                catalog.complete_version(
                    session=session, model=name, version=v.version, artifacts=[artifact]
                )
            for alias, version, weight in (("production", 1, None), ("canary", 2, 10)):
                aliases.set_alias(
                    session=session,
                    model=name,
                    alias=alias,
                    version=version,
                    weight=weight,
                    actor="bench",
                    reason="benchmark",
                )


def measure(db: RegistryDatabase, reads: int) -> tuple[int, float, float]:
    """(statements, CPU ms, wall ms) per read, the versions already known."""
    table = RouteTable(db)
    table.reload()
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(reads):
            table.reload()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    return statements // reads, cpu / reads * 1000, wall / reads * 1000


@contextmanager
def registry(backend: str, postgres: str, work: Path, models: int) -> Iterator[RegistryDatabase]:
    """A migrated, filled registry on `backend`, removed afterwards."""
    if backend == "sqlite":
        settings = RegistrySettings(
            var_dir=work, database_url=f"sqlite:///{work / f'registry-{models}.db'}"
        )
        db = connect(settings)
        migrate.upgrade(db)
        fill(db, models)
        try:
            yield db
        finally:
            db.dispose()
        return
    schema = f"tollgate_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(postgres).update_query_dict({"options": f"-csearch_path={schema}"})
        settings = RegistrySettings(var_dir=work, database_url=url.render_as_string(False))
        db = connect(settings)
        try:
            migrate.upgrade(db)
            fill(db, models)
            yield db
        finally:
            db.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _postgres_answers(url: str) -> bool:
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.routes")
    parser.add_argument("--models", default="1,10,100")
    parser.add_argument("--reads", type=int, default=20, help="timed reads per registry")
    parser.add_argument("--postgres", default=POSTGRES, help="PostgreSQL URL ('' to skip)")
    args = parser.parse_args()
    stop_cleanly_on_sigterm()
    console = Console()
    backends = ["sqlite"]
    if args.postgres and _postgres_answers(args.postgres):
        backends.append("postgresql")
    elif args.postgres:
        console.print(f"PostgreSQL at {args.postgres} does not answer: SQLite only")
    table = Table(
        "database", "models", "statements/read", "CPU ms/read", "wall ms/read",
        title="RouteTable.reload, versions already known",
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-routes-") as tmp:
        for backend in backends:
            for models in (int(m) for m in args.models.split(",")):
                with registry(backend, args.postgres, Path(tmp), models) as db:
                    statements, cpu, wall = measure(db, args.reads)
                table.add_row(backend, str(models), str(statements), f"{cpu:.2f}", f"{wall:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
