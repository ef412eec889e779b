"""`/admin`: API-key administration (admin scope, guarded once on the router)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from gateway.auth import Identity
from gateway.deps import IdentityDep, ServicesDep
from gateway.errors import InvalidInput, NotFound
from gateway.keys import KeyInfo, KeyLimits, KeyNotFound, create_key, list_keys, revoke_key
from gateway.ratelimit import REVOKED_SET


async def _admin(caller: IdentityDep) -> Identity:
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
