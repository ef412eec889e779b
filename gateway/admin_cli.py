"""`python -m gateway admin ...`: the admin API for operators, from a terminal.

It calls a running gateway (`--url`, default the local one) with a token from `--token` or
`TOLLGATE_ADMIN_TOKEN`; without either, it mints a short-lived local admin token with
`TOLLGATE_JWT_SECRET` for the operator named by `--as` (recorded in the history). Output is a
readable summary, or the API's JSON with `--json`. Every change is sent with a fresh
`Idempotency-Key`, so a retry after a lost answer does not act twice.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from gateway.config import GatewaySettings
from gateway.identity.tokens import TokenService

admin_app = typer.Typer(
    help="Promote, roll back and canary model versions; read their history.",
    no_args_is_help=True,
)
out, err = Console(), Console(stderr=True)
ME = os.environ.get("USER", "operator")

UrlOption = Annotated[
    str | None, typer.Option("--url", help="The gateway (default: the local one).")
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="TOLLGATE_ADMIN_TOKEN", help="An access token with admin."),
]
AsOption = Annotated[
    str,
    typer.Option("--as", help="Who you are, for a locally minted token (kept in the history)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer.")]
ReasonOption = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the history).")]


class _Client:
    def __init__(self, url: str | None, token: str | None, actor: str) -> None:
        settings = GatewaySettings()
        host = "127.0.0.1" if settings.host in {"0.0.0.0", ""} else settings.host  # noqa: S104
        self.base = url or f"http://{host}:{settings.port}"
        if token is None:
            token, _ = TokenService(settings).issue(subject=actor, scopes=frozenset({"admin"}))
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        headers = dict(self.headers)
        if method != "GET":
            headers["Idempotency-Key"] = uuid.uuid4().hex
        try:
            answer = httpx.request(
                method, f"{self.base}{path}", headers=headers, timeout=600, **kwargs
            )
        except httpx.TransportError as exc:
            raise _fail(f"cannot reach the gateway at {self.base}: {exc}") from None
        try:
            body: dict[str, Any] = answer.json()
        except ValueError:
            raise _fail(f"{answer.status_code} from {self.base}: {answer.text[:200]}") from None
        if answer.status_code >= 400:
            error = body.get("error", {})
            raise _fail(f"{error.get('code', answer.status_code)}: {error.get('message', body)}")
        return body


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _client(url: str | None, token: str | None, actor: str) -> _Client:
    try:
        return _Client(url, token, actor)
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _aliases(body: dict[str, Any]) -> str:
    parts = []
    for state in body.get("aliases", []):
        weight = f" ({state['weight']} %)" if state.get("weight") is not None else ""
        parts.append(f"{state['alias']} → v{state['version']}{weight}")
    return ", ".join(parts) or "no aliases"


def _changed(body: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(body, indent=2))
        return
    event = body["event"]
    out.print(
        f"{body['model']}: {event['alias']} {event['action']} "
        f"(v{event['from_version']} → v{event['to_version']}); now {_aliases(body)}; "
        f"revision {body['revision']}",
        highlight=False,
    )


@admin_app.command()
def promote(
    model: Annotated[str, typer.Argument()],
    version: Annotated[int, typer.Argument()],
    reason: ReasonOption,
    url: UrlOption = None,
    token: TokenOption = None,
    actor: AsOption = ME,
    as_json: JsonOption = False,
) -> None:
    """Make VERSION production (once every Triton worker holds it ready)."""
    body = _client(url, token, actor).call(
        "POST", f"/admin/models/{model}/promote", json={"version": version, "reason": reason}
    )
    _changed(body, as_json)


@admin_app.command()
def rollback(
    model: Annotated[str, typer.Argument()],
    reason: ReasonOption,
    url: UrlOption = None,
    token: TokenOption = None,
    actor: AsOption = ME,
    as_json: JsonOption = False,
) -> None:
    """Point production back where it pointed before its last change."""
    body = _client(url, token, actor).call(
        "POST", f"/admin/models/{model}/rollback", json={"reason": reason}
    )
    _changed(body, as_json)


@admin_app.command()
def canary(
    model: Annotated[str, typer.Argument()],
    version: Annotated[int | None, typer.Argument(help="Omit with --end.")] = None,
    weight: Annotated[int, typer.Option(help="Share of callers, percent.")] = 10,
    end: Annotated[bool, typer.Option("--end", help="End the canary.")] = False,
    reason: ReasonOption = "",
    url: UrlOption = None,
    token: TokenOption = None,
    actor: AsOption = ME,
    as_json: JsonOption = False,
) -> None:
    """Send WEIGHT % of callers to VERSION (each caller sticks to one side), or --end it."""
    if not reason:
        raise _fail("give a --reason; it is kept in the history")
    client = _client(url, token, actor)
    if end:
        body = client.call("DELETE", f"/admin/models/{model}/canary", json={"reason": reason})
    elif version is None:
        raise _fail("name the VERSION to canary, or pass --end")
    else:
        body = client.call(
            "PUT",
            f"/admin/models/{model}/canary",
            json={"version": version, "weight": weight, "reason": reason},
        )
    _changed(body, as_json)


@admin_app.command()
def status(
    model: Annotated[str, typer.Argument()],
    url: UrlOption = None,
    token: TokenOption = None,
    actor: AsOption = ME,
    as_json: JsonOption = False,
) -> None:
    """Where the aliases point now, and the canary gate's verdict."""
    body = _client(url, token, actor).call("GET", f"/admin/models/{model}")
    if as_json:
        print(json.dumps(body, indent=2))
        return
    gate = body.get("canary_gate") or {}
    out.print(f"{model}: {_aliases(body)}; revision {body['revision']}", highlight=False)
    out.print(f"canary gate: {gate.get('status')}: {gate.get('reason')}", highlight=False)


@admin_app.command()
def history(
    model: Annotated[str, typer.Argument()],
    at: Annotated[
        datetime | None,
        typer.Option(help="What was serving at this instant (ISO 8601 with a timezone)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    url: UrlOption = None,
    token: TokenOption = None,
    actor: AsOption = ME,
    as_json: JsonOption = False,
) -> None:
    """Alias changes, newest first: when, who, what and why."""
    client = _client(url, token, actor)
    if at is not None:
        body = client.call("GET", f"/admin/models/{model}/history", params={"at": at.isoformat()})
        if as_json:
            print(json.dumps(body, indent=2))
        else:
            out.print(f"{model} at {body['at']}: {_aliases(body)}", highlight=False)
        return
    body = client.call("GET", f"/admin/models/{model}/history", params={"limit": limit})
    if as_json:
        print(json.dumps(body, indent=2))
        return
    table = Table("when", "alias", "action", "from", "to", "weight", "who", "why")
    for e in body["items"]:
        table.add_row(
            e["created_at"][:19].replace("T", " "),
            e["alias"],
            e["action"],
            f"v{e['from_version']}" if e["from_version"] else "",
            f"v{e['to_version']}" if e["to_version"] else "",
            "" if e["weight"] is None else f"{e['weight']} %",
            e["actor"],
            e["reason"],
        )
    out.print(table)
