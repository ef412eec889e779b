"""Aliases: append-only history, rollback by history, state at any past instant."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from registry import aliases, catalog
from registry.db import RegistryDatabase, reading, writing
from registry.errors import AliasNotSet, InvalidInput, InvalidState
from registry.tables import utcnow
from tests.registry.conftest import DATASET, ReadyFactory


def _set(db: RegistryDatabase, alias: str, version: int, weight: int | None = None) -> None:
    with writing(db) as session:
        aliases.set_alias(
            session=session,
            model="demo",
            alias=alias,
            version=version,
            weight=weight,
            actor="ops",
            reason=f"to v{version}",
        )


def _production(db: RegistryDatabase) -> int | None:
    with reading(db) as session:
        states = {s.alias: s for s in aliases.get_aliases(session=session, model="demo")}
    return states["production"].version if "production" in states else None


def test_set_records_an_event_with_actor_reason_and_transition(
    db: RegistryDatabase, make_ready: ReadyFactory
) -> None:
    make_ready()
    make_ready()
    _set(db, "production", 1)
    _set(db, "production", 2)
    _set(db, "canary", 1, weight=10)
    with reading(db) as session:
        events = aliases.list_history(session=session, model="demo").items
        states = aliases.get_aliases(session=session, model="demo")
    assert [(e.alias, e.action, e.from_version, e.to_version, e.weight) for e in events] == [
        ("canary", "set", None, 1, 10),
        ("production", "set", 1, 2, None),
        ("production", "set", None, 1, None),
    ]
    assert all(e.actor == "ops" and e.reason for e in events)
    assert {(s.alias, s.version, s.weight) for s in states} == {
        ("production", 2, None),
        ("canary", 1, 10),
    }


def test_rollback_follows_history_and_keeps_walking_back(
    db: RegistryDatabase, make_ready: ReadyFactory
) -> None:
    for _ in range(3):
        make_ready()
    for v in (1, 2, 3):
        _set(db, "production", v)
    with writing(db) as session:
        first = aliases.rollback_alias(session=session, model="demo", actor="ops", reason="bad v3")
    assert (first.action, first.from_version, first.to_version) == ("rollback", 3, 2)
    with writing(db) as session:
        aliases.rollback_alias(session=session, model="demo", actor="ops", reason="bad v2 too")
    assert _production(db) == 1
    with writing(db) as session, pytest.raises(InvalidState, match="no earlier state"):
        aliases.rollback_alias(session=session, model="demo", actor="ops", reason="nothing left")
    _set(db, "production", 3)
    with writing(db) as session:
        aliases.rollback_alias(
            session=session, model="demo", actor="ops", reason="undo the re-promotion"
        )
    assert _production(db) == 1


def test_rollback_restores_canary_weight(db: RegistryDatabase, make_ready: ReadyFactory) -> None:
    for _ in range(3):
        make_ready()
    _set(db, "production", 1)
    _set(db, "canary", 2, weight=5)
    _set(db, "canary", 3, weight=50)
    with writing(db) as session:
        event = aliases.rollback_alias(
            session=session, model="demo", alias="canary", actor="ops", reason="r"
        )
    assert (event.to_version, event.weight, event.from_weight) == (2, 5, 50)


def test_alias_rules(db: RegistryDatabase, make_ready: ReadyFactory) -> None:
    make_ready()
    make_ready()
    with writing(db) as session:
        catalog.register_version(session=session, model="demo", dataset_sha256=DATASET)
    cases: list[tuple[str, int, int | None, type[Exception], str]] = [
        ("canary", 2, None, InvalidInput, "needs a traffic weight"),
        ("canary", 2, 101, InvalidInput, "between 0 and 100"),
        ("canary", 2, -1, InvalidInput, "between 0 and 100"),
        ("production", 1, 50, InvalidInput, "takes no weight"),
        ("shadow", 1, None, InvalidInput, "unknown alias"),
        ("production", 3, None, InvalidState, "registering"),
    ]
    for alias, version, weight, error, message in cases:
        with writing(db) as session, pytest.raises(error, match=message):
            aliases.set_alias(
                session=session,
                model="demo",
                alias=alias,
                version=version,
                weight=weight,
                actor="a",
                reason="r",
            )
    with writing(db) as session, pytest.raises(InvalidInput, match="reason"):
        aliases.set_alias(
            session=session, model="demo", alias="production", version=1, actor="a", reason=" "
        )
    _set(db, "production", 1)
    with writing(db) as session, pytest.raises(InvalidInput, match="already production"):
        aliases.set_alias(
            session=session,
            model="demo",
            alias="canary",
            version=1,
            weight=5,
            actor="a",
            reason="r",
        )
    with writing(db) as session, pytest.raises(InvalidState, match="move the alias first"):
        catalog.archive_version(session=session, model="demo", version=1, reason="r")
    with writing(db) as session, pytest.raises(AliasNotSet):
        aliases.clear_alias(session=session, model="demo", alias="canary", actor="a", reason="r")
    with reading(db) as session:
        assert len(aliases.list_history(session=session, model="demo").items) == 1


def test_setting_the_current_target_again_records_nothing(
    db: RegistryDatabase, make_ready: ReadyFactory
) -> None:
    make_ready()
    _set(db, "production", 1)
    _set(db, "production", 1)
    with reading(db) as session:
        assert len(aliases.list_history(session=session, model="demo").items) == 1


def test_state_at_any_past_instant(db: RegistryDatabase, make_ready: ReadyFactory) -> None:
    for _ in range(3):
        make_ready()
    before_any = utcnow()
    instants = []
    for v in (1, 2, 3):
        time.sleep(0.01)
        _set(db, "production", v)
        instants.append(utcnow())
    _set(db, "canary", 1, weight=20)
    with writing(db) as session:
        aliases.clear_alias(
            session=session, model="demo", alias="canary", actor="ops", reason="done"
        )
    with reading(db) as session:
        assert aliases.model_state_at(session=session, model="demo", at=before_any).aliases == []
        for version, instant in zip((1, 2, 3), instants, strict=True):
            state = aliases.model_state_at(session=session, model="demo", at=instant)
            assert [(s.alias, s.version) for s in state.aliases] == [("production", version)]
            assert state.versions[0].dataset_sha256 == DATASET
        now = aliases.model_state_at(session=session, model="demo", at=utcnow())
        assert [s.alias for s in now.aliases] == ["production"]
        until = aliases.list_history(session=session, model="demo", until=instants[1])
        assert [e.to_version for e in until.items] == [2, 1]
        with pytest.raises(InvalidInput, match="timezone"):
            aliases.model_state_at(session=session, model="demo", at=datetime(2026, 1, 1))


def test_event_times_never_go_backwards(db: RegistryDatabase, make_ready: ReadyFactory) -> None:
    make_ready()
    make_ready()
    _set(db, "production", 1)
    _set(db, "production", 2)
    with reading(db) as session:
        events = aliases.list_history(session=session, model="demo").items
    assert events[0].created_at >= events[1].created_at
    assert events[0].created_at - events[1].created_at < timedelta(seconds=5)
    assert events[0].created_at.tzinfo == UTC


def test_history_cannot_be_rewritten(db: RegistryDatabase, make_ready: ReadyFactory) -> None:
    make_ready()
    _set(db, "production", 1)
    for statement in ("UPDATE alias_events SET reason = 'edited'", "DELETE FROM alias_events"):
        with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.execute(text(statement))
    with reading(db) as session:
        events = aliases.list_history(session=session, model="demo").items
    assert [e.reason for e in events] == ["to v1"]


def _adopt(db: RegistryDatabase) -> int | None:
    with writing(db) as session:
        return aliases.adopt_first_version(
            session=session, model="demo", actor="trainer", reason=aliases.FIRST_VERSION_REASON
        )


def test_a_fresh_model_adopts_its_newest_ready_version_once(
    db: RegistryDatabase, make_ready: ReadyFactory
) -> None:
    with writing(db) as session:
        catalog.register_version(session=session, model="demo", dataset_sha256=DATASET)
    assert _adopt(db) is None, "a version still in training is not servable"
    make_ready()
    make_ready()
    assert _adopt(db) == 3
    assert _production(db) == 3
    make_ready()
    assert _adopt(db) is None, "production is set: a new version waits for a promotion"
    assert _production(db) == 3
    with reading(db) as session:
        (event,) = aliases.list_history(session=session, model="demo").items
    assert (event.actor, event.reason) == ("trainer", aliases.FIRST_VERSION_REASON)


def test_a_cleared_production_is_not_adopted_again(
    db: RegistryDatabase, make_ready: ReadyFactory
) -> None:
    make_ready()
    _set(db, "production", 1)
    with writing(db) as session:
        aliases.clear_alias(
            session=session, model="demo", alias="production", actor="ops", reason="outage"
        )
    assert _adopt(db) is None
    assert _production(db) is None
