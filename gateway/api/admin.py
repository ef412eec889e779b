"""`/admin`: models (read, promote, roll back, canary) and API keys; admin scope, guarded once
on the router. Every change needs a `reason` and is recorded with the caller's `sub`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from gateway.control.alias_changes import (
    Idempotency,
    Outcome,
    registry_errors,
    request_digest,
    state_body,
)
from gateway.deps import ActiveIdentityDep, Services, ServicesDep
from gateway.errors import InvalidInput, NotFound, ValidationFailed
from gateway.generation.ratelimit import REVOKED_SET
from gateway.identity.api_keys import (
    KeyInfo,
    KeyLimits,
    KeyNotFound,
    create_key,
    list_keys,
    revoke_key,
)
from gateway.identity.tokens import Identity
from registry import aliases, catalog
from registry.db import reading
from registry.errors import RegistryError
from registry.tables import VersionStatus

T = TypeVar("T")


async def _admin(caller: ActiveIdentityDep) -> Identity:
    caller.require("admin")
    return caller


AdminDep = Annotated[Identity, Depends(_admin)]
router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(_admin)])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    scopes: list[str] = Field(min_length=1, max_length=2)
    requests_capacity: int | None = Field(default=None, ge=1)
    requests_per_s: float | None = Field(default=None, gt=0)
    tokens_capacity: int | None = Field(default=None, ge=1)
    tokens_per_s: float | None = Field(default=None, gt=0)


class KeyPublic(BaseModel):
    key_id: str
    name: str
    scopes: list[str]
    limits: dict[str, Any]
    created_by: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, info: KeyInfo) -> KeyPublic:
        return cls(
            key_id=info.key_id,
            name=info.name,
            scopes=sorted(info.scopes),
            limits=info.limits.__dict__,
            created_by=info.created_by,
            created_at=info.created_at,
            revoked_at=info.revoked_at,
        )


class KeyCreated(KeyPublic):
    key: str = Field(description="The key itself; shown only in this response.")


@router.post("/keys", status_code=201)
async def create(body: KeyCreate, caller: AdminDep, svc: ServicesDep) -> KeyCreated:
    """Create an API key; the response is the only place its secret ever appears."""
    limits = KeyLimits(
        body.requests_capacity, body.requests_per_s, body.tokens_capacity, body.tokens_per_s
    )
    try:
        secret, info = await asyncio.to_thread(
            create_key,
            db=svc.db,
            name=body.name,
            scopes=",".join(body.scopes),
            actor=caller.subject,
            limits=limits,
        )
    except ValueError as exc:
        raise InvalidInput(str(exc), code="invalid_scope") from exc
    return KeyCreated(**KeyPublic.of(info).model_dump(), key=secret)


@router.get("/keys")
async def index(svc: ServicesDep, include_revoked: bool = False) -> list[KeyPublic]:
    """Every key (never its secret); revoked ones with `include_revoked=true`."""
    keys = await asyncio.to_thread(list_keys, db=svc.db, include_revoked=include_revoked)
    return [KeyPublic.of(k) for k in keys]


@router.delete("/keys/{key_id}")
async def revoke(key_id: str, caller: AdminDep, svc: ServicesDep) -> KeyPublic:
    """Revoke a key: its tokens stop working on their next request."""
    try:
        info = await asyncio.to_thread(revoke_key, db=svc.db, key_id=key_id, actor=caller.subject)
    except KeyNotFound as exc:
        raise NotFound(str(exc), code="key_not_found") from exc
    if svc.limiter.redis is not None:
        try:
            async with asyncio.timeout(svc.settings.redis_timeout_s):
                await svc.limiter.redis.sadd(REVOKED_SET, info.key_id)
        except (
            RedisError,
            OSError,
            TimeoutError,
        ):  # the database is the record; startup re-syncs Redis
            svc.metrics.redis_errors.inc()
    return KeyPublic.of(info)


# -- models: read ------------------------------------------------------------------------------
def _registry(fn: Callable[[Session], T], svc: Services) -> Awaitable[T]:
    def run() -> T:
        with reading(svc.db) as session:
            return fn(session)

    async def call() -> T:
        try:
            return await asyncio.to_thread(run)
        except RegistryError as exc:
            raise registry_errors(exc) from exc

    return call()


@router.get("/models")
async def models(
    svc: ServicesDep, limit: Annotated[int, Query(ge=1, le=100)] = 50, cursor: str | None = None
) -> dict[str, Any]:
    """Every model with where its aliases point (`revision`: its newest alias event)."""

    def read(session: Session) -> dict[str, Any]:
        page = catalog.list_models(session=session, limit=limit, cursor=cursor)
        items = [{**m.model_dump(mode="json"), **state_body(session, m.name)} for m in page.items]
        return {"items": items, "next_cursor": page.next_cursor}

    return await _registry(read, svc)


@router.get("/models/{model}")
async def model_state(model: str, svc: ServicesDep) -> JSONResponse:
    """Where each alias points now, the model's revision (also the `ETag`), and the canary
    gate's current verdict."""
    state = await svc.operator.state(model)
    body = {**state, "canary_gate": svc.gates.verdict(model).as_dict()}
    return JSONResponse(body, headers={"ETag": f'"{state["revision"]}"'})


@router.get("/models/{model}/versions")
async def versions(
    model: str,
    svc: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
    status: VersionStatus | None = None,
) -> dict[str, Any]:
    """Versions, newest first, with dataset hash, hyperparameters, metrics and status."""

    def read(session: Session) -> dict[str, Any]:
        page = catalog.list_versions(
            session=session, model=model, status=status, limit=limit, cursor=cursor
        )
        return {
            "items": [v.model_dump(mode="json") for v in page.items],
            "next_cursor": page.next_cursor,
        }

    return await _registry(read, svc)


@router.get("/models/{model}/history")
async def history(
    model: str,
    svc: ServicesDep,
    at: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Alias events, newest first (who, when, why, from and to). With `?at=<instant>`: what
    was serving at that instant instead."""

    def read(session: Session) -> dict[str, Any]:
        if at is not None:
            if at.tzinfo is None:
                raise ValidationFailed("`at` needs a timezone, e.g. 2026-12-03T14:02:00Z")
            return aliases.model_state_at(session=session, model=model, at=at).model_dump(
                mode="json"
            )
        page = aliases.list_history(session=session, model=model, limit=limit, cursor=cursor)
        return {
            "items": [e.model_dump(mode="json") for e in page.items],
            "next_cursor": page.next_cursor,
        }

    return await _registry(read, svc)


# -- models: change ----------------------------------------------------------------------------
class _Change(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000, description="Why; kept in the history.")


class PromoteBody(_Change):
    version: int = Field(ge=1)


class CanaryBody(_Change):
    version: int = Field(ge=1)
    weight: int = Field(ge=0, le=100, description="Share of callers, in percent.")


@dataclass(frozen=True)
class ChangeHeaders:
    idempotency_key: str | None
    if_match: str | None


async def change_headers(
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
    if_match: Annotated[str | None, Header(alias="If-Match", max_length=40)] = None,
) -> ChangeHeaders:
    """`Idempotency-Key`: a retried call returns the first answer and acts once. `If-Match`:
    the revision (ETag) the caller last saw; 409 if the model has changed since."""
    return ChangeHeaders(idempotency_key, if_match)


HeadersDep = Annotated[ChangeHeaders, Depends(change_headers)]


def _how(
    caller: Identity, action: str, model: str, body: BaseModel, headers: ChangeHeaders
) -> dict[str, Any]:
    expect = None
    if headers.if_match is not None:
        try:
            expect = int(headers.if_match.strip().removeprefix("W/").strip('"'))
        except ValueError as exc:
            raise ValidationFailed('If-Match must be a revision, e.g. "42"') from exc
    idempotency = None
    if headers.idempotency_key is not None:
        if not headers.idempotency_key.strip():
            raise ValidationFailed("Idempotency-Key must not be empty")
        digest = request_digest(action, model, body.model_dump())
        idempotency = Idempotency(caller.subject, headers.idempotency_key, digest)
    return {"expect": expect, "idempotency": idempotency}


def _answer(outcome: Outcome) -> JSONResponse:
    headers = {"ETag": f'"{outcome.body["revision"]}"'}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(outcome.body, status_code=outcome.status, headers=headers)


@router.post("/models/{model}/promote")
async def promote(
    model: str,
    body: PromoteBody,
    caller: AdminDep,
    svc: ServicesDep,
    headers: HeadersDep,
) -> JSONResponse:
    """Make `version` production, once every Triton worker holds it ready."""
    how = _how(caller, "promote", model, body, headers)
    outcome = await svc.operator.promote(
        model, body.version, actor=caller.subject, reason=body.reason, **how
    )
    return _answer(outcome)


@router.post("/models/{model}/rollback")
async def rollback(
    model: str,
    body: _Change,
    caller: AdminDep,
    svc: ServicesDep,
    headers: HeadersDep,
) -> JSONResponse:
    """Point production back where it pointed before its last change (the history decides);
    a second rollback keeps walking back."""
    how = _how(caller, "rollback", model, body, headers)
    return _answer(
        await svc.operator.rollback(model, actor=caller.subject, reason=body.reason, **how)
    )


@router.put("/models/{model}/canary")
async def canary(
    model: str,
    body: CanaryBody,
    caller: AdminDep,
    svc: ServicesDep,
    headers: HeadersDep,
) -> JSONResponse:
    """Send `weight` % of callers (each caller sticks to one side) to `version`."""
    how = _how(caller, "canary", model, body, headers)
    outcome = await svc.operator.set_canary(
        model, body.version, body.weight, actor=caller.subject, reason=body.reason, **how
    )
    return _answer(outcome)


@router.delete("/models/{model}/canary")
async def end_canary(
    model: str,
    body: _Change,
    caller: AdminDep,
    svc: ServicesDep,
    headers: HeadersDep,
) -> JSONResponse:
    """End the canary: every caller goes to production."""
    how = _how(caller, "clear_canary", model, body, headers)
    return _answer(
        await svc.operator.clear_canary(model, actor=caller.subject, reason=body.reason, **how)
    )
