"""Alias changes made by operators: promote, roll back, canary; safe under retries and races.

Every change follows the same steps:

1. read the model's revision (the id of its newest alias event);
2. make every Triton worker hold the version the change will make live (`Fleet.ensure`; a
   version that fails to load stops the change here, with Triton's reason);
3. in one transaction, holding the model's row lock: replay the stored answer if this
   `Idempotency-Key` was already used by this caller; refuse with 409 and the current state
   if the revision moved since step 1 (someone else changed the model meanwhile: never a
   silent overwrite); else append the alias event, and store the answer under the key;
4. re-read the routing table at once and tell the other replicas (a Redis notice).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from gateway.control.reconciler import Fleet
from gateway.errors import GatewayError, NotFound, ValidationFailed
from gateway.generation.routing import RouteTable
from gateway.telemetry.metrics import Metrics
from registry import aliases
from registry.alias_state import latest_event
from registry.catalog import find_model, find_version, lock_model
from registry.db import RegistryDatabase, reading, writing
from registry.errors import (
    AliasNotSet,
    InvalidInput,
    InvalidState,
    ModelNotFound,
    RegistryError,
    VersionNotFound,
)
from registry.schemas import AliasEventPublic
from registry.tables import Alias, AliasEvent, IdempotencyKey, VersionStatus, utcnow

IDEMPOTENCY_TTL = timedelta(hours=24)
T = TypeVar("T")


class Conflict(GatewayError):
    """The model changed between reading it and changing it; the body has its state now."""

    status, code = 409, "conflict"


class IdempotencyKeyReused(GatewayError):
    status, code = 422, "idempotency_key_reused"


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]
    replayed: bool = False


def registry_errors(exc: RegistryError) -> GatewayError:
    """The HTTP face of a registry refusal."""
    if isinstance(exc, ModelNotFound):
        return NotFound(str(exc), code="model_not_found")
    if isinstance(exc, VersionNotFound):
        return NotFound(str(exc), code="version_not_found")
    if isinstance(exc, AliasNotSet):
        return Conflict(str(exc), code="alias_not_set")
    if isinstance(exc, InvalidState):
        return Conflict(str(exc), code="invalid_state")
    if isinstance(exc, InvalidInput):
        return ValidationFailed(str(exc))
    return GatewayError(str(exc))


def request_digest(action: str, model: str, body: dict[str, Any]) -> str:
    canonical = json.dumps([action, model, body], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def revision_of(session: Session, model_id: int) -> int:
    newest = session.scalar(select(func.max(AliasEvent.id)).where(AliasEvent.model_id == model_id))
    return int(newest or 0)


def state_body(session: Session, model: str) -> dict[str, Any]:
    row = find_model(session, model)
    return {
        "model": model,
        "revision": revision_of(session, row.id),
        "aliases": [
            s.model_dump(mode="json") for s in aliases.get_aliases(session=session, model=model)
        ],
    }


@dataclass(frozen=True)
class Idempotency:
    actor: str
    key: str
    digest: str


class Operator:
    def __init__(
        self,
        *,
        db: RegistryDatabase,
        fleet: Fleet,
        routes: RouteTable,
        metrics: Metrics,
        announce: Callable[[str], Awaitable[None]],
    ) -> None:
        self.db, self.fleet, self.routes, self.metrics = db, fleet, routes, metrics
        self.announce = announce

    async def state(self, model: str) -> dict[str, Any]:
        return await self._registry(lambda: self._read(lambda s: state_body(s, model)))

    async def promote(
        self, model: str, version: int, *, actor: str, reason: str, **how: Any
    ) -> Outcome:
        def apply(session: Session) -> AliasEventPublic:
            return aliases.set_alias(
                session=session,
                model=model,
                alias="production",
                version=version,
                actor=actor,
                reason=reason,
            )

        return await self._change(model, "promote", version, apply, **how)

    async def rollback(self, model: str, *, actor: str, reason: str, **how: Any) -> Outcome:
        target = await self._registry(lambda: self._read(lambda s: _rollback_target(s, model)))

        def apply(session: Session) -> AliasEventPublic:
            return aliases.rollback_alias(session=session, model=model, actor=actor, reason=reason)

        return await self._change(model, "rollback", target, apply, **how)

    async def set_canary(
        self, model: str, version: int, weight: int, *, actor: str, reason: str, **how: Any
    ) -> Outcome:
        def apply(session: Session) -> AliasEventPublic:
            return aliases.set_alias(
                session=session,
                model=model,
                alias="canary",
                version=version,
                weight=weight,
                actor=actor,
                reason=reason,
            )

        return await self._change(model, "canary", version, apply, **how)

    async def clear_canary(self, model: str, *, actor: str, reason: str, **how: Any) -> Outcome:
        def apply(session: Session) -> AliasEventPublic:
            return aliases.clear_alias(
                session=session, model=model, alias="canary", actor=actor, reason=reason
            )

        return await self._change(model, "clear_canary", None, apply, **how)

    # -- the steps ----------------------------------------------------------------------------
    async def _change(
        self,
        model: str,
        action: str,
        version: int | None,
        apply: Callable[[Session], AliasEventPublic],
        *,
        expect: int | None = None,
        idempotency: Idempotency | None = None,
    ) -> Outcome:
        if idempotency is not None:
            stored = await self._registry(lambda: self._read(lambda s: _stored(s, idempotency)))
            if stored is not None:
                return stored
        revision = await self._registry(
            lambda: self._read(lambda s: _revision_checking(s, model, version))
        )
        if expect is not None and expect != revision:
            raise await self._conflict(model, f"expected revision {expect}, the model is at")
        async with self.fleet.lock(model):
            if version is not None:
                await self.fleet.ensure(model, await self.fleet.wanted(model, also=version))
            outcome = await self._registry(
                lambda: self._commit(model, revision, apply, idempotency)
            )
        if isinstance(outcome, str):
            raise await self._conflict(model, "another change landed first; the model is at")
        if not outcome.replayed:
            self.metrics.alias_changes.labels(model, action).inc()
            await self.after_change(model)
        return outcome

    def _commit(
        self,
        model: str,
        revision: int,
        apply: Callable[[Session], AliasEventPublic],
        idempotency: Idempotency | None,
    ) -> Outcome | str:
        with writing(self.db) as session:
            row = lock_model(session, model)
            if idempotency is not None:
                replay = _stored(session, idempotency)
                if replay is not None:
                    return replay
            if revision_of(session, row.id) != revision:
                return "moved"
            event = apply(session)
            body = {"event": event.model_dump(mode="json"), **state_body(session, model)}
            if idempotency is not None:
                _store(session, idempotency, 200, body)
            return Outcome(200, body)

    async def after_change(self, model: str) -> None:
        """Route the new way here at once, and tell the other replicas."""
        await asyncio.to_thread(self.routes.reload)
        await self.announce(model)

    async def _conflict(self, model: str, message: str) -> Conflict:
        state = await self.state(model)
        error = Conflict(f"{message} revision {state['revision']}")
        error.extra = {"current": state}
        return error

    def _read(self, fn: Callable[[Session], T]) -> T:
        with reading(self.db) as session:
            return fn(session)

    async def _registry(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except RegistryError as exc:
            raise registry_errors(exc) from exc


def _revision_checking(session: Session, model: str, version: int | None) -> int:
    """The model's revision, once the version to be made live is known to be ready."""
    revision = revision_of(session, find_model(session, model).id)
    if version is not None:
        row = find_version(session, model, version)
        if row.status != VersionStatus.READY:
            raise InvalidState(f"{model} v{version} is {row.status}; only ready versions serve")
    return revision


def _rollback_target(session: Session, model: str) -> int:
    row = find_model(session, model)
    current = latest_event(session, model_id=row.id, alias=Alias.PRODUCTION)
    if current is None or current.undo_event_id is None:
        raise InvalidState(f"{model} production has no earlier state to roll back to")
    target = session.get_one(AliasEvent, current.undo_event_id)
    if target.to_version is None:
        raise InvalidState(f"before its last change {model} production pointed nowhere")
    return target.to_version


def _stored(session: Session, idem: Idempotency) -> Outcome | None:
    row = session.scalars(
        select(IdempotencyKey).where(
            IdempotencyKey.actor == idem.actor, IdempotencyKey.key == idem.key
        )
    ).first()
    if row is None:
        return None
    if row.request_sha256 != idem.digest:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request; use a new key"
        )
    return Outcome(row.status_code, json.loads(row.response), replayed=True)


def _store(session: Session, idem: Idempotency, status: int, body: dict[str, Any]) -> None:
    session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - IDEMPOTENCY_TTL)
    )
    session.add(
        IdempotencyKey(
            actor=idem.actor,
            key=idem.key,
            request_sha256=idem.digest,
            status_code=status,
            response=json.dumps(body),
        )
    )
