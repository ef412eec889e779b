"""What serving needs from the registry, read in a fixed number of queries.

The gateway re-reads its routing table every couple of seconds on every replica. Read model by
model (the models; then for each one its row, its ready versions, its row again and each of
its two aliases), that is five queries per model and an ORM object per row: about 4 ms of CPU
for one model on SQLite, growing with the registry, and a round trip each on PostgreSQL.
`serving_state` asks three questions whatever the number of models: the models, the ready
versions (numbers only), and the newest event of every alias. A version's hyperparameters
never change, so they are read separately, once per version, by `hyperparameters_of`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.tables import AliasEvent, Model, ModelVersion, VersionStatus

_CHUNK = 500  # ids per IN list


@dataclass(frozen=True)
class Target:
    """Where an alias points: a version and, for a canary, its weight (0-100)."""

    version: int
    weight: int | None = None


@dataclass(frozen=True)
class ServingState:
    """Every model, by name: its ready versions (number → version row id) and where each of
    its aliases points now (aliases pointing nowhere are left out)."""

    ready: dict[str, dict[int, int]]
    aliases: dict[str, dict[str, Target]]


def serving_state(*, session: Session) -> ServingState:
    """The registry's serving state now, in three queries.

    On PostgreSQL (read committed) each query may see a later moment than the one before; a
    read on SQLite is one snapshot. Models come first, and what belongs to a model created
    since is left for the next read. Aliases come before versions: an alias is only ever
    pointed at a version that is ready already, so a promotion or canary landing between the
    two reads is either not seen yet or seen with its version ready, never as an alias to
    nothing."""
    names: dict[int, str] = dict(session.execute(select(Model.id, Model.name)).all())
    # The newest event of each (model, alias) is its state; the index on (model_id, alias, id)
    # answers the grouping. An event that points the alias nowhere (cleared) leaves it out.
    newest = select(func.max(AliasEvent.id)).group_by(AliasEvent.model_id, AliasEvent.alias)
    events = session.execute(
        select(
            AliasEvent.model_id, AliasEvent.alias, AliasEvent.to_version, AliasEvent.weight
        ).where(AliasEvent.id.in_(newest))
    )
    aliases: dict[str, dict[str, Target]] = {name: {} for name in names.values()}
    for model_id, alias, target, weight in events:
        if target is not None and model_id in names:
            aliases[names[model_id]][alias] = Target(target, weight)
    ready: dict[str, dict[int, int]] = {name: {} for name in names.values()}
    rows = session.execute(
        select(ModelVersion.model_id, ModelVersion.version, ModelVersion.id).where(
            ModelVersion.status == VersionStatus.READY.value
        )
    )
    for model_id, version, row_id in rows:
        if model_id in names:
            ready[names[model_id]][version] = row_id
    return ServingState(ready=ready, aliases=aliases)


def hyperparameters_of(*, session: Session, row_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The hyperparameters of versions by their row ids (as `serving_state` gives them)."""
    found: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(list(row_ids)):
        query = select(ModelVersion.id, ModelVersion.hyperparameters).where(
            ModelVersion.id.in_(chunk)
        )
        found.update(dict(session.execute(query).all()))
    return found


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
