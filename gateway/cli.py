"""`python -m gateway`: serve the API, run the whole local system, mint tokens, manage keys,
and operate model versions (`admin`)."""

from __future__ import annotations

import contextlib
import gc
import json
import signal
import socket
from collections.abc import Iterator
from typing import Annotated

import typer
import uvicorn
from redis import Redis
from rich.console import Console
from rich.table import Table

from gateway.admin_cli import admin_app
from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.generation.ratelimit import REVOKED_SET
from gateway.identity.api_keys import KeyLimits, KeyNotFound, create_key, list_keys, revoke_key
from gateway.identity.tokens import TokenService, parse_scopes
from gateway.telemetry.logs import configure_logging
from hosting.binary import TritonUnavailable
from hosting.cli import prepare, server_for
from registry import aliases, migrate
from registry.aliases import FIRST_VERSION_REASON
from registry.db import RegistryDatabase, connect, writing
from registry.errors import RegistryError

app = typer.Typer(help="The Tollgate gateway.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(admin_app, name="admin")
out, err = Console(), Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _settings() -> GatewaySettings:
    try:
        return GatewaySettings()
    except ValueError as exc:
        raise _fail(str(exc)) from None


YOUNG_GC_THRESHOLD = 10_000


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after shutting down, which would kill the process
    before `run` stops Triton; here the signal only asks the server to finish."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, lambda *_: setattr(self, "should_exit", True))
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        # What exists once the app has started (modules, routes, clients) lives as long as the
        # process. Frozen, it is left out of the collector's full passes, which otherwise walk
        # it all and stop every request for tens of milliseconds.
        gc.collect()
        gc.freeze()
        # The youngest generation is collected once allocations exceed deallocations by 700
        # (the default). A request's objects live as long as it does, so with requests in
        # flight that count swings by more than 700; a collection resets it to 0 and the
        # frees that follow cannot take it below 0, so it ratchets up to a collection every
        # dozen requests. At 16 callers that was about 0.2 ms per collection, 20 µs per
        # request in all (timed with `gc.callbacks`); at 10,000, 7 collections in 12,000
        # requests.
        gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


def _uvicorn(settings: GatewaySettings) -> uvicorn.Server:
    configure_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # configure_logging set up JSON lines
        access_log=False,  # the gateway writes its own access lines
        http="httptools",  # uvicorn's own protocol (docs/architecture.md, measured)
        timeout_graceful_shutdown=int(settings.triton.exit_timeout_s),
    )
    return _Server(config)


@app.command()
def serve() -> None:
    """Serve the API on TOLLGATE_HOST:TOLLGATE_PORT against the configured Triton endpoints."""
    settings = _settings()
    out.print(f"gateway on http://{settings.host}:{settings.port}")
    _uvicorn(settings).run()


@app.command()
def run() -> None:
    """Start Triton and the gateway on the embedded defaults; Ctrl-C stops both."""
    settings = _settings()
    try:
        db = connect(settings.registry)
        migrate.upgrade(db)
        model = settings.default_model
        _ensure_production(db, model)
        db.dispose()
        models = prepare(settings.hosting)
        if model not in models:
            raise TritonUnavailable(f"{model} has no servable version: run `make run` again")
        triton = server_for(settings.hosting, sorted(models))
        triton.start()
    except (RegistryError, TritonUnavailable) as exc:
        raise _fail(str(exc)) from None
    try:
        token, ttl = TokenService(settings).issue(
            subject="local-developer", scopes=frozenset({"generate", "admin"})
        )
        base = f"http://{settings.host}:{settings.port}"
        out.print(f"Triton ready (gRPC {triton.grpc_url}); gateway on {base}")
        out.print(f"\nAn access token (generate, admin; valid {ttl // 60} minutes):")
        print(token, flush=True)
        out.print("\nTry:")
        body = json.dumps({"prompt": "def fibonacci(n):", "max_tokens": 40, "temperature": 0})
        out.print(
            f"curl -s {base}/v1/generate -H 'Authorization: Bearer {token}' "
            f"-H 'Content-Type: application/json' -d '{body}'",
            soft_wrap=True,
            highlight=False,
        )
        out.print("\nMore tokens: python -m gateway token --subject me --scopes generate")
        _uvicorn(settings).run()
    finally:
        out.print("stopping Triton")
        triton.stop()


def _ensure_production(db: RegistryDatabase, model: str) -> None:
    """A fresh install serves its first trained version: make the newest ready one production."""
    with writing(db) as session:
        adopted = aliases.adopt_first_version(
            session=session, model=model, actor="make run", reason=FIRST_VERSION_REASON
        )
    if adopted is not None:
        out.print(f"{model} v{adopted} is now production")


@app.command()
def token(
    subject: Annotated[str, typer.Option(help="The token's subject (sub).")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: generate, admin.")] = "generate",
    ttl: Annotated[int, typer.Option(help="Seconds, at most 900.")] = 900,
) -> None:
    """Print an access token signed with the local key (TOLLGATE_JWT_SECRET)."""
    settings = _settings()
    try:
        parsed = parse_scopes(scopes)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if not 30 <= ttl <= 900:
        raise _fail("--ttl must be between 30 and 900 seconds")
    issued, _ = TokenService(settings).issue(subject=subject, scopes=parsed, ttl_s=ttl)
    print(issued)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: generate, admin.")] = "generate",
    requests_capacity: Annotated[int | None, typer.Option(min=1)] = None,
    requests_per_s: Annotated[float | None, typer.Option(min=0.001)] = None,
    tokens_capacity: Annotated[int | None, typer.Option(min=1)] = None,
    tokens_per_s: Annotated[float | None, typer.Option(min=0.001)] = None,
    actor: Annotated[str, typer.Option(help="Who creates it (recorded).")] = "cli",
) -> None:
    """Create a key; its secret is printed once and stored only as a hash."""
    settings = _settings()
    db = connect(settings.registry)
    try:
        migrate.check_schema(db)
        secret, info = create_key(
            db=db,
            name=name,
            scopes=scopes,
            actor=actor,
            limits=KeyLimits(requests_capacity, requests_per_s, tokens_capacity, tokens_per_s),
        )
    except (ValueError, RegistryError) as exc:
        raise _fail(str(exc)) from None
    finally:
        db.dispose()
    out.print(f"key {info.key_id} ({info.name}; scopes {' '.join(sorted(info.scopes))})")
    out.print("the secret, shown only now:")
    print(secret)


@keys_app.command("list")
def keys_list(
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List keys (never their secrets)."""
    db = connect(_settings().registry)
    try:
        found = list_keys(db=db, include_revoked=all_keys)
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    finally:
        db.dispose()
    if as_json:
        rows = [
            {
                "key_id": k.key_id,
                "name": k.name,
                "scopes": sorted(k.scopes),
                "created_at": k.created_at.isoformat(),
                "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
            }
            for k in found
        ]
        print(json.dumps(rows, indent=2))
        return
    table = Table("key id", "name", "scopes", "created", "revoked")
    for k in found:
        revoked = k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else ""
        table.add_row(
            k.key_id,
            k.name,
            " ".join(sorted(k.scopes)),
            k.created_at.isoformat(timespec="seconds"),
            revoked,
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (the part after tg_).")],
    actor: Annotated[str, typer.Option(help="Who revokes it (recorded).")] = "cli",
) -> None:
    """Revoke a key: requests with tokens it was exchanged for fail from the next one on."""
    settings = _settings()
    db = connect(settings.registry)
    try:
        info = revoke_key(db=db, key_id=key_id, actor=actor)
    except (KeyNotFound, RegistryError) as exc:
        raise _fail(str(exc)) from None
    finally:
        db.dispose()
    if settings.redis_url:
        with Redis.from_url(settings.redis_url) as redis:
            redis.sadd(REVOKED_SET, info.key_id)
    out.print(f"key {info.key_id} revoked")
