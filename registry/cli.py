"""`python -m registry`: initialise, inspect and change the registry from a terminal.

Every read command takes `--json`. Errors print one line on stderr and exit 1.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import BaseModel, TypeAdapter
from rich.console import Console

from registry import aliases, catalog, integrity, migrate, render
from registry.config import RegistrySettings
from registry.db import RegistryDatabase, connect, reading, writing
from registry.errors import InvalidInput, RegistryError
from registry.integrity import VerifyReport
from registry.pagination import DEFAULT_LIMIT
from registry.schemas import Page
from registry.tables import VersionStatus

app = typer.Typer(help="The Tollgate model registry.", no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="Registered models.", no_args_is_help=True)
versions_app = typer.Typer(help="Versions of a model.", no_args_is_help=True)
alias_app = typer.Typer(help="Aliases: production, and canary with a weight.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(versions_app, name="versions")
app.add_typer(alias_app, name="alias")

out = Console()
err = Console(stderr=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Limit = Annotated[int, typer.Option(help="Rows per page (1-500).")]
Cursor = Annotated[str | None, typer.Option(help="Cursor printed by the previous page.")]
Reason = Annotated[str, typer.Option(help="Why: recorded in the audit history.")]
Actor = Annotated[
    str | None,
    typer.Option(help="Who: recorded in the history (default $TOLLGATE_ACTOR or $USER)."),
]


@contextmanager
def _registry(*, initialised: bool = True) -> Iterator[RegistryDatabase]:
    """Open the registry named by the settings; turn registry errors into one line and exit 1."""
    db: RegistryDatabase | None = None
    try:
        db = connect(RegistrySettings())
        if initialised:
            migrate.check_schema(db)
        yield db
    except RegistryError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        if db is not None:
            db.dispose()


def _emit(value: BaseModel) -> None:
    typer.echo(value.model_dump_json(indent=2))


def _more(page: Page[Any]) -> None:
    """Tell a reader of a table how to get the next page."""
    if page.next_cursor:
        out.print(f"more: --cursor {page.next_cursor}")


def _actor(actor: str | None) -> str:
    return actor or os.environ.get("TOLLGATE_ACTOR") or getpass.getuser()


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"cannot read {text!r} as an ISO 8601 timestamp") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def init() -> None:
    """Create or migrate the registry schema (idempotent)."""
    with _registry(initialised=False) as db:
        revision = migrate.upgrade(db)
        out.print(f"registry {db.safe_url} is at schema revision {revision}", highlight=False)


@models_app.command("list")
def models_list(as_json: Json = False, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> None:
    """Models by name, with where their aliases point."""
    with _registry() as db, reading(db) as session:
        page = catalog.list_models(session=session, limit=limit, cursor=cursor)
        if as_json:
            _emit(page)
            return
        rows = [(m, aliases.get_aliases(session=session, model=m.name)) for m in page.items]
        render.models(out, rows)
        _more(page)


@versions_app.command("list")
def versions_list(
    model: str,
    status: Annotated[
        VersionStatus | None, typer.Option(help="Only versions in this status.")
    ] = None,
    as_json: Json = False,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> None:
    """A model's versions, newest first."""
    with _registry() as db, reading(db) as session:
        page = catalog.list_versions(
            session=session, model=model, status=status, limit=limit, cursor=cursor
        )
        if as_json:
            _emit(page)
            return
        render.versions(out, page.items)
        _more(page)


@versions_app.command("show")
def versions_show(model: str, version: int, as_json: Json = False) -> None:
    """Everything recorded about one version."""
    with _registry() as db, reading(db) as session:
        found = catalog.get_version(session=session, model=model, version=version)
    if as_json:
        _emit(found)
    else:
        render.version(out, found)


@versions_app.command("archive")
def versions_archive(model: str, version: int, reason: Reason) -> None:
    """Retire a ready or failed version that no alias points at."""
    with _registry() as db, writing(db) as session:
        archived = catalog.archive_version(
            session=session, model=model, version=version, reason=reason
        )
    out.print(f"{model} v{archived.version} is {archived.status}")


@alias_app.command("set")
def alias_set(
    model: str,
    alias: str,
    version: int,
    reason: Reason,
    weight: Annotated[int | None, typer.Option(help="Canary traffic share, 0-100.")] = None,
    actor: Actor = None,
) -> None:
    """Point an alias at a ready version."""
    with _registry() as db, writing(db) as session:
        event = aliases.set_alias(
            session=session,
            model=model,
            alias=alias,
            version=version,
            weight=weight,
            actor=_actor(actor),
            reason=reason,
        )
    render.history(out, [event])


@alias_app.command("clear")
def alias_clear(model: str, alias: str, reason: Reason, actor: Actor = None) -> None:
    """Make an alias point nowhere (e.g. end a canary)."""
    with _registry() as db, writing(db) as session:
        event = aliases.clear_alias(
            session=session, model=model, alias=alias, actor=_actor(actor), reason=reason
        )
    render.history(out, [event])


@alias_app.command("rollback")
def alias_rollback(
    model: str, reason: Reason, alias: str = "production", actor: Actor = None
) -> None:
    """Point an alias where it pointed before its last change (repeat to walk back)."""
    with _registry() as db, writing(db) as session:
        event = aliases.rollback_alias(
            session=session, model=model, alias=alias, actor=_actor(actor), reason=reason
        )
    render.history(out, [event])


@app.command()
def history(
    model: str,
    at: Annotated[
        str | None, typer.Option(help="ISO 8601 instant (UTC if no offset): what was serving then.")
    ] = None,
    as_json: Json = False,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> None:
    """Alias changes, newest first; with --at, the state at that instant and changes up to it."""
    with _registry() as db, reading(db) as session:
        until = _instant(at) if at else None
        page = aliases.list_history(
            session=session, model=model, until=until, limit=limit, cursor=cursor
        )
        state = aliases.model_state_at(session=session, model=model, at=until) if until else None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "state": state.model_dump(mode="json") if state else None,
                    **page.model_dump(mode="json"),
                },
                indent=2,
            )
        )
        return
    if state is not None:
        render.state(out, state)
    render.history(out, page.items)
    _more(page)


@app.command()
def verify(
    model: str, version: Annotated[int | None, typer.Argument()] = None, as_json: Json = False
) -> None:
    """Re-hash a version's files (or all ready versions') against the record; exit 1 on mismatch."""
    settings = RegistrySettings()
    reports: list[VerifyReport] = []
    with _registry() as db, reading(db) as session:
        numbers = (
            [version]
            if version is not None
            else integrity.versions_to_verify(session=session, model=model)
        )
        for number in numbers:
            report = integrity.verify_version(
                session=session, repository=settings.model_repository, model=model, version=number
            )
            reports.append(report)
            if not as_json:
                render.verify(out, report)
    if as_json:
        typer.echo(TypeAdapter(list[VerifyReport]).dump_json(reports, indent=2).decode())
    elif not reports:
        out.print(f"{model} has no ready versions to verify")
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


@app.command()
def rebuild(as_json: Json = False) -> None:
    """Recreate missing registry rows from the model repository's manifest.json files."""
    settings = RegistrySettings()
    with _registry() as db, writing(db) as session:
        report = integrity.rebuild_from_repository(
            session=session, repository=settings.model_repository
        )
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in report.entries], indent=2))
    else:
        render.rebuild(out, report)
