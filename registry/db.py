"""Opening the registry database: engines, sessions, write transactions, error mapping.

Writers serialize per model: PostgreSQL through `SELECT ... FOR UPDATE` on the model row,
SQLite through `BEGIN IMMEDIATE` (one writer at a time, waiting up to the busy timeout).
Driver exceptions never leave this package: `translate_errors` turns them into
`RegistryUnavailable` or `RegistryConfigError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from registry.config import RegistrySettings
from registry.errors import RegistryConfigError, RegistryUnavailable

_WRITE = "tollgate_write"


@dataclass(frozen=True)
class RegistryDatabase:
    """An engine and its session factory; open with `connect`, close with `dispose`."""

    engine: Engine
    sessions: sessionmaker[Session]

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()


def parse_url(raw: str) -> URL:
    """Parse a database URL, refusing anything the registry cannot use."""
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise RegistryConfigError(f"malformed database URL {raw!r}: {exc}") from exc
    if url.get_backend_name() not in {"sqlite", "postgresql"}:
        raise RegistryConfigError(
            f"unsupported database {url.get_backend_name()!r} in TOLLGATE_DATABASE_URL; "
            "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        )
    return url


def connect(settings: RegistrySettings) -> RegistryDatabase:
    """Create the engine for `settings.database_url` (no connection is made yet)."""
    url = parse_url(settings.database_url)
    timeout = settings.database_timeout_s
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            settings.var_dir.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": timeout, "check_same_thread": False}
    else:
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        kwargs["connect_args"] = {"connect_timeout": max(1, round(timeout))}
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise RegistryConfigError(
            f"unusable database URL {settings.database_url!r}: {exc}"
        ) from exc
    if url.get_backend_name() == "sqlite":
        _configure_sqlite(engine, timeout)
    else:
        _configure_postgres(engine, timeout)
    return RegistryDatabase(engine=engine, sessions=sessionmaker(engine, expire_on_commit=False))


def _configure_sqlite(engine: Engine, timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so that `begin` below decides.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


def _configure_postgres(engine: Engine, timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"SET lock_timeout = {int(timeout * 1000)}")
        cursor.execute("SET TIME ZONE 'UTC'")
        cursor.close()
        dbapi_conn.commit()


@contextmanager
def translate_errors(db: RegistryDatabase) -> Iterator[None]:
    """Turn driver errors (server down, lock wait timed out) into registry errors."""
    try:
        yield
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise RegistryUnavailable(f"registry database {db.safe_url}: {reason}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise RegistryUnavailable(f"registry database {db.safe_url}: connection lost") from exc
        raise


@contextmanager
def reading(db: RegistryDatabase) -> Iterator[Session]:
    """A session for reads; its transaction ends (rolled back) on exit."""
    with translate_errors(db), db.sessions() as session:
        yield session


@contextmanager
def writing(db: RegistryDatabase) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error.

    On SQLite the transaction begins IMMEDIATE, so concurrent writers queue instead of
    failing when they upgrade from a read lock.
    """
    with translate_errors(db), db.sessions() as session:
        session.connection(execution_options={_WRITE: True})
        with _commit(session):
            yield session


@contextmanager
def _commit(session: Session) -> Iterator[None]:
    try:
        yield
    except BaseException:
        session.rollback()
        raise
    session.commit()
