"""Deriving alias state from the append-only event log (now, or at any past instant)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.schemas import AliasState
from registry.tables import Alias, AliasEvent


def latest_event(
    session: Session, *, model_id: int, alias: str, at: datetime | None = None
) -> AliasEvent | None:
    """The newest event of one alias, optionally at or before `at` (one indexed row)."""
    query = select(AliasEvent).where(AliasEvent.model_id == model_id, AliasEvent.alias == alias)
    if at is not None:
        query = query.where(AliasEvent.created_at <= at)
    return session.scalars(query.order_by(AliasEvent.id.desc()).limit(1)).first()


def state_of(event: AliasEvent | None) -> AliasState | None:
    """The alias state an event leaves behind; None when the alias points nowhere."""
    if event is None or event.to_version is None:
        return None
    return AliasState(
        alias=event.alias,
        version=event.to_version,
        weight=event.weight,
        since=event.created_at,
        event_id=event.id,
    )


def aliases_of(session: Session, *, model_id: int, at: datetime | None = None) -> list[AliasState]:
    """Every alias of a model that points somewhere, now or at instant `at`."""
    states = (state_of(latest_event(session, model_id=model_id, alias=a, at=at)) for a in Alias)
    return [s for s in states if s is not None]
