"""What a gateway replica's periodic registry reads cost, by registry size and database.

Every replica re-reads its routing table every `route_refresh_s` (2 s), and its reconciler
reads what every model needs from the workers every `reconcile_interval_s` (5 s); both run in
a thread of the gateway's process, taking turns with the event loop for the interpreter. This
builds throw-away registries of 1, 10 and 100 models (two ready versions each, production on
one, a 10 % canary on the other), on SQLite and, when it answers, on a fresh PostgreSQL schema,
and times each read: `RouteTable.reload` once the versions are known, and the reconciler's
`versions_to_serve_all`. SQL statements, CPU and wall time per read.

    python -m bench.routes [--models 1,10,100] [--reads 20] [--postgres URL]
        [--plot PATH]   # default: <var_dir>/bench/routes.png
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from bench import stop_cleanly_on_sigterm
from bench.plot import figure
from gateway.generation.routing import RouteTable
from hosting.serving_plan import versions_to_serve_all
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


def measure(
    db: RegistryDatabase, read: Callable[[], object], reads: int
) -> tuple[int, float, float]:
    """(statements, CPU ms, wall ms) per call of `read`, after one untimed call."""
    read()
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(reads):
            read()
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
    parser.add_argument("--plot", type=Path, help="default: <var_dir>/bench/routes.png")
    args = parser.parse_args()
    stop_cleanly_on_sigterm()
    console = Console(width=150)
    backends = ["sqlite"]
    if args.postgres and _postgres_answers(args.postgres):
        backends.append("postgresql")
    elif args.postgres:
        console.print(f"PostgreSQL at {args.postgres} does not answer: SQLite only")
    table = Table(
        "database", "models", "routing: statements", "CPU ms", "wall ms",
        "reconciler: statements", "CPU ms", "wall ms",
        title="one read of the registry, by what reads it",
    )  # fmt: skip
    levels = [int(m) for m in args.models.split(",")]
    cpu_ms: dict[tuple[str, str], list[float]] = {}  # (database, reader): CPU ms by level
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-routes-") as tmp:
        for backend in backends:
            for models in levels:
                with registry(backend, args.postgres, Path(tmp), models) as db:
                    routes = RouteTable(db)
                    cells = [backend, str(models)]
                    for reader, read in (
                        ("routing", routes.reload),
                        (
                            "reconciler",
                            partial(versions_to_serve_all, db, grace_s=10.0, newest=False),
                        ),
                    ):
                        statements, cpu, wall = measure(db, read, args.reads)
                        cells += [str(statements), f"{cpu:.2f}", f"{wall:.2f}"]
                        cpu_ms.setdefault((backend, reader), []).append(cpu)
                table.add_row(*cells)
    console.print(table)
    plot = args.plot or RegistrySettings().var_dir / "bench" / "routes.png"
    save_plot(cpu_ms, levels, plot)
    console.print(f"plot: {plot}")


def save_plot(cpu_ms: dict[tuple[str, str], list[float]], levels: list[int], path: Path) -> None:
    """CPU ms per read by number of models, a line for each database and reader."""
    with figure(path, 1, size=(7, 4)) as (axis,):
        for (backend, reader), values in cpu_ms.items():
            axis.plot(levels, values, marker="o", label=f"{reader} read, {backend}")
        axis.set(
            xlabel="models in the registry",
            ylabel="CPU ms per read",
            title="a replica's periodic registry reads",
            xscale="log",
        )
        axis.grid(True, alpha=0.3)
        axis.legend()


if __name__ == "__main__":
    main()
