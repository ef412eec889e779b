"""What serving needs from the registry, read in a fixed number of queries.

The gateway re-reads its routing table every couple of seconds on every replica. Read model by
model (the models; then for each one its row, its ready versions, its row again and each of
its two aliases), that is five queries per model and an ORM object per row: about 4 ms of CPU
for one model on SQLite, growing with the registry, and a round trip each on PostgreSQL.
`serving_state` asks three questions whatever the number of models: the models, the ready
versions (numbers only), and the newest event of every alias. A version's hyperparameters
never change, so they are read separately, once per version, by `hyperparameters_of`. The
workers' reconciler reads what every model needs from the same state, plus
`rollback_versions` and `left_since` (`hosting.serving_plan.versions_to_serve_all`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from registry.tables import Alias, AliasEvent, Model, ModelVersion, VersionStatus

_CHUNK = 500  # ids per IN list
_Q = TypeVar("_Q", bound=Select[*tuple[Any, ...]])


@dataclass(frozen=True)
class Target:
    """Where an alias points: a version and, for a canary, its weight (0-100)."""

    version: int
    weight: int | None = None


@dataclass(frozen=True)
class ServingState:
    """Every model, by name: its ready versions (number → version row id), where each of its
    aliases points now (aliases pointing nowhere are left out), and, where production's
    latest event can be undone, the event a rollback returns to (`rollback_versions`)."""

    ready: dict[str, dict[int, int]]
    aliases: dict[str, dict[str, Target]]
    undo_events: dict[str, int]


def serving_state(*, session: Session, models: Collection[str] | None = None) -> ServingState:
    """The registry's serving state now (of every model, or of `models`), in three queries.

    On PostgreSQL (read committed) each query may see a later moment than the one before; a
    read on SQLite is one snapshot. Models come first, and what belongs to a model created
    since is left for the next read. Aliases come before versions: an alias is only ever
    pointed at a version that is ready already, so a promotion or canary landing between the
    two reads is either not seen yet or seen with its version ready, never as an alias to
    nothing."""
    query = select(Model.id, Model.name)
    if models is not None:
        query = query.where(Model.name.in_(list(models)))
    names: dict[int, str] = dict(session.execute(query).all())
    scope = None if models is None else list(names)
    # The newest event of each (model, alias) is its state; the index on (model_id, alias, id)
    # answers the grouping. An event that points the alias nowhere (cleared) leaves it out.
    newest = _within(
        select(func.max(AliasEvent.id)).group_by(AliasEvent.model_id, AliasEvent.alias),
        AliasEvent.model_id,
        scope,
    )
    events = session.execute(
        select(
            AliasEvent.model_id,
            AliasEvent.alias,
            AliasEvent.to_version,
            AliasEvent.weight,
            AliasEvent.undo_event_id,
        ).where(AliasEvent.id.in_(newest))
    )
    aliases: dict[str, dict[str, Target]] = {name: {} for name in names.values()}
    undo_events: dict[str, int] = {}
    for model_id, alias, target, weight, undo in events:
        if model_id not in names:
            continue
        if target is not None:
            aliases[names[model_id]][alias] = Target(target, weight)
        if alias == Alias.PRODUCTION and undo is not None:
            undo_events[names[model_id]] = undo
    ready: dict[str, dict[int, int]] = {name: {} for name in names.values()}
    rows = session.execute(
        _within(
            select(ModelVersion.model_id, ModelVersion.version, ModelVersion.id).where(
                ModelVersion.status == VersionStatus.READY.value
            ),
            ModelVersion.model_id,
            scope,
        )
    )
    for model_id, version, row_id in rows:
        if model_id in names:
            ready[names[model_id]][version] = row_id
    return ServingState(ready=ready, aliases=aliases, undo_events=undo_events)


def rollback_versions(*, session: Session, state: ServingState) -> dict[str, int]:
    """By model: the version a rollback of production would return to, where there is one
    (one query, none when nothing can be rolled back)."""
    if not state.undo_events:
        return {}
    query = select(AliasEvent.id, AliasEvent.to_version).where(
        AliasEvent.id.in_(list(state.undo_events.values()))
    )
    back: dict[int, int | None] = dict(session.execute(query).all())
    return {
        model: version
        for model, event_id in state.undo_events.items()
        if (version := back.get(event_id)) is not None
    }


def left_since(
    *, session: Session, since: datetime, models: Collection[str] | None = None
) -> dict[str, set[int]]:
    """By model: the versions an alias stopped naming at or after `since` (one query)."""
    query = (
        select(Model.name, AliasEvent.from_version)
        .join(Model, Model.id == AliasEvent.model_id)
        .where(AliasEvent.created_at >= since, AliasEvent.from_version.is_not(None))
    )
    if models is not None:
        query = query.where(Model.name.in_(list(models)))
    left: dict[str, set[int]] = {}
    for name, version in session.execute(query):
        if version is not None:
            left.setdefault(name, set()).add(version)
    return left


def hyperparameters_of(*, session: Session, row_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The hyperparameters of versions by their row ids (as `serving_state` gives them)."""
    found: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(list(row_ids)):
        query = select(ModelVersion.id, ModelVersion.hyperparameters).where(
            ModelVersion.id.in_(chunk)
        )
        found.update(dict(session.execute(query).all()))
    return found


def _within(query: _Q, column: Any, scope: list[int] | None) -> _Q:
    """`query` restricted to the models in `scope` (None: every model)."""
    return query if scope is None else query.where(column.in_(scope))


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
