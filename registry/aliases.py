"""Aliases (`production`, `canary` with a weight): set, clear, roll back, and their history.

Every change appends one `AliasEvent`; nothing is updated in place. Each event records the
event a rollback from it returns to (`undo_event_id`), so "roll back" means "point the alias
where it pointed before", and a second rollback keeps walking back, in one indexed read.
Changes lock the model row, so concurrent changes on one model serialize in a definite order.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.alias_state import aliases_of, latest_event
from registry.catalog import find_model, find_version, get_version, lock_model
from registry.errors import AliasNotSet, InvalidInput, InvalidState
from registry.pagination import DEFAULT_LIMIT, check_limit, int_cursor
from registry.schemas import AliasEventPublic, AliasState, ModelState, Page
from registry.tables import (
    Alias,
    AliasAction,
    AliasEvent,
    Model,
    ModelVersion,
    VersionStatus,
    utcnow,
)


def parse_alias(alias: str) -> Alias:
    try:
        return Alias(alias)
    except ValueError:
        names = ", ".join(a.value for a in Alias)
        raise InvalidInput(f"unknown alias {alias!r}; aliases are: {names}") from None


def set_alias(
    *,
    session: Session,
    model: str,
    alias: str,
    version: int,
    weight: int | None = None,
    actor: str,
    reason: str,
) -> AliasEventPublic:
    """Point `alias` at a `ready` version (canary needs a weight 0-100; production takes none).

    Setting an alias to where it already points records nothing and returns the last event.
    """
    name = parse_alias(alias)
    _check_audit(actor, reason)
    if name is Alias.CANARY and weight is None:
        raise InvalidInput("canary needs a traffic weight between 0 and 100")
    if name is Alias.PRODUCTION and weight is not None:
        raise InvalidInput("production takes no weight: it serves whatever canary does not")
    if weight is not None and not 0 <= weight <= 100:
        raise InvalidInput(f"weight must be between 0 and 100, got {weight}")
    model_row = lock_model(session, model)
    _check_ready(session, model, version)
    if name is Alias.CANARY:
        production = latest_event(session, model_id=model_row.id, alias=Alias.PRODUCTION)
        if production is not None and production.to_version == version:
            raise InvalidInput(f"{model} v{version} is already production; a canary must differ")
    current = latest_event(session, model_id=model_row.id, alias=name)
    if current is not None and (current.to_version, current.weight) == (version, weight):
        return AliasEventPublic.of(current, model)
    return _append(
        session,
        model_row,
        alias=name,
        action=AliasAction.SET,
        current=current,
        to_version=version,
        weight=weight,
        undo_event_id=current.id if current is not None else None,
        actor=actor,
        reason=reason,
    )


def clear_alias(
    *, session: Session, model: str, alias: str, actor: str, reason: str
) -> AliasEventPublic:
    """Make `alias` point nowhere (e.g. end a canary)."""
    name = parse_alias(alias)
    _check_audit(actor, reason)
    model_row = lock_model(session, model)
    current = latest_event(session, model_id=model_row.id, alias=name)
    if current is None or current.to_version is None:
        raise AliasNotSet(f"{model} has no {name.value} alias to clear")
    return _append(
        session,
        model_row,
        alias=name,
        action=AliasAction.CLEAR,
        current=current,
        to_version=None,
        weight=None,
        undo_event_id=current.id,
        actor=actor,
        reason=reason,
    )


def rollback_alias(
    *, session: Session, model: str, alias: str = Alias.PRODUCTION.value, actor: str, reason: str
) -> AliasEventPublic:
    """Point `alias` back where it pointed before its last change; repeat to walk further back."""
    name = parse_alias(alias)
    _check_audit(actor, reason)
    model_row = lock_model(session, model)
    current = latest_event(session, model_id=model_row.id, alias=name)
    if current is None or current.undo_event_id is None:
        raise InvalidState(f"{model} {name.value} has no earlier state to roll back to")
    target = session.get_one(AliasEvent, current.undo_event_id)
    if target.to_version is None:
        raise InvalidState(
            f"before its last change {model} {name.value} pointed nowhere; use clear instead"
        )
    _check_ready(session, model, target.to_version)
    return _append(
        session,
        model_row,
        alias=name,
        action=AliasAction.ROLLBACK,
        current=current,
        to_version=target.to_version,
        weight=target.weight,
        undo_event_id=target.undo_event_id,
        actor=actor,
        reason=reason,
    )


FIRST_VERSION_REASON = "first version of a fresh install"


def adopt_first_version(*, session: Session, model: str, actor: str, reason: str) -> int | None:
    """A model that has never had a production version serves its newest ready one.

    Returns the version made production, or None when production is already set (or was
    ever set: a cleared production stays cleared) or no version is ready. The model row is
    locked first, so two callers at once make one change.
    """
    _check_audit(actor, reason)
    model_row = lock_model(session, model)
    if latest_event(session, model_id=model_row.id, alias=Alias.PRODUCTION) is not None:
        return None
    newest = session.scalar(
        select(ModelVersion.version)
        .where(ModelVersion.model_id == model_row.id, ModelVersion.status == VersionStatus.READY)
        .order_by(ModelVersion.version.desc())
        .limit(1)
    )
    if newest is None:
        return None
    set_alias(
        session=session, model=model, alias="production", version=newest, actor=actor, reason=reason
    )
    return int(newest)


def get_aliases(*, session: Session, model: str) -> list[AliasState]:
    """Where each alias of `model` points now."""
    return aliases_of(session, model_id=find_model(session, model).id)


def model_state_at(*, session: Session, model: str, at: datetime) -> ModelState:
    """What served `model` at instant `at`: each alias, and the versions they named."""
    if at.tzinfo is None:
        raise InvalidInput("the instant must carry a timezone (e.g. 2026-11-17T14:02:00Z)")
    states = aliases_of(session, model_id=find_model(session, model).id, at=at)
    versions = [get_version(session=session, model=model, version=s.version) for s in states]
    return ModelState(model=model, at=at, aliases=states, versions=versions)


def list_history(
    *,
    session: Session,
    model: str,
    until: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[AliasEventPublic]:
    """Alias events of `model`, newest first, optionally only those at or before `until`."""
    model_row = find_model(session, model)
    query = (
        select(AliasEvent)
        .where(AliasEvent.model_id == model_row.id)
        .order_by(AliasEvent.id.desc())
        .limit(check_limit(limit) + 1)
    )
    if until is not None:
        query = query.where(AliasEvent.created_at <= until)
    before = int_cursor(cursor)
    if before is not None:
        query = query.where(AliasEvent.id < before)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        items=[AliasEventPublic.of(r, model) for r in rows],
        next_cursor=str(rows[-1].id) if more else None,
    )


def _check_audit(actor: str, reason: str) -> None:
    if not actor.strip():
        raise InvalidInput("every alias change needs an actor")
    if not reason.strip():
        raise InvalidInput("every alias change needs a reason")


def _check_ready(session: Session, model: str, version: int) -> None:
    row = find_version(session, model, version)
    if row.status != VersionStatus.READY:
        raise InvalidState(
            f"{model} v{version} is {row.status}; aliases point only at ready versions"
        )


def _append(
    session: Session,
    model_row: Model,
    *,
    alias: Alias,
    action: AliasAction,
    current: AliasEvent | None,
    to_version: int | None,
    weight: int | None,
    undo_event_id: int | None,
    actor: str,
    reason: str,
) -> AliasEventPublic:
    # Event times never go backwards within a model, even if clocks of writers disagree,
    # so "the state at instant T" and "the order of events" always agree.
    newest = session.scalars(
        select(AliasEvent.created_at)
        .where(AliasEvent.model_id == model_row.id)
        .order_by(AliasEvent.id.desc())
        .limit(1)
    ).first()
    now = utcnow()
    event = AliasEvent(
        model_id=model_row.id,
        alias=alias.value,
        action=action.value,
        from_version=current.to_version if current is not None else None,
        from_weight=current.weight if current is not None else None,
        to_version=to_version,
        weight=weight,
        undo_event_id=undo_event_id,
        actor=actor,
        reason=reason,
        created_at=max(now, newest) if newest is not None else now,
    )
    session.add(event)
    session.flush()
    return AliasEventPublic.of(event, model_row.name)
