"""The serving state the gateway routes by, read in a fixed number of queries (both backends)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from gateway.generation.routing import Route, RouteTable, VersionInfo
from hosting.serving_plan import versions_to_serve, versions_to_serve_all
from registry import aliases, catalog
from registry.db import RegistryDatabase, reading, writing
from registry.errors import ModelNotFound
from registry.serving import serving_state
from tests.registry.conftest import DATASET, ReadyFactory, point


def _context(length: int) -> dict[str, Any]:
    return {"hyperparameters": {"model": {"context_length": length}}}


@contextmanager
def _statements(db: RegistryDatabase) -> Iterator[list[str]]:
    """The SQL statements run on `db` inside the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def test_routes_follow_aliases_ready_versions_and_context_lengths(
    db: RegistryDatabase, make_ready: ReadyFactory
) -> None:
    for _ in range(2):
        make_ready("alpha", **_context(256))
    make_ready("beta", **_context(512))
    make_ready("beta", **_context(512))
    make_ready("delta", **_context(64))
    make_ready("delta", **_context(128))
    with writing(db) as session:
        catalog.register_version(session=session, model="gamma", dataset_sha256=DATASET)
        catalog.register_version(session=session, model="alpha", dataset_sha256=DATASET)
        catalog.fail_version(session=session, model="alpha", version=3, reason="test")
        point(session, "alpha", "production", 1)
        point(session, "alpha", "canary", 2, 25)
        point(session, "beta", "production", 1)
        point(session, "beta", "canary", 2, 10)
        aliases.clear_alias(
            session=session, model="beta", alias="canary", actor="tester", reason="test"
        )
        point(session, "delta", "production", 1)
        point(session, "delta", "production", 2)
        catalog.archive_version(session=session, model="delta", version=1, reason="test")

    routes = RouteTable(db).reload()

    a1, a2, b1 = VersionInfo(1, 256), VersionInfo(2, 256), VersionInfo(1, 512)
    assert routes == {
        "alpha": Route("alpha", production=a1, canary=a2, canary_weight=25, ready={1: a1, 2: a2}),
        "beta": Route("beta", production=b1, ready={1: b1, 2: VersionInfo(2, 512)}),
        "delta": Route("delta", production=VersionInfo(2, 128), ready={2: VersionInfo(2, 128)}),
        "gamma": Route("gamma", production=None, ready={}),
    }


def test_a_reload_sees_changes_in_three_queries_however_many_models(
    db: RegistryDatabase, make_ready: ReadyFactory
) -> None:
    table = RouteTable(db)
    make_ready("one", **_context(32))
    with writing(db) as session:
        point(session, "one", "production", 1)
    with _statements(db) as first:
        table.reload()
    with _statements(db) as steady_one:
        table.reload()

    for i in range(12):
        make_ready(f"m{i}", **_context(32))
    make_ready("one", **_context(48))
    with writing(db) as session:
        point(session, "one", "canary", 2, 50)
    with _statements(db) as with_new_versions:
        routes = table.reload()
    with _statements(db) as steady_thirteen:
        assert table.reload() == routes

    queries = [
        [s for s in run if s.lstrip().upper().startswith("SELECT")]
        for run in (first, steady_one, with_new_versions, steady_thirteen)
    ]
    # The first read of a version also reads its hyperparameters; later reads do not.
    assert [len(q) for q in queries] == [4, 3, 4, 3]
    assert routes["one"].canary == VersionInfo(2, 48)
    assert routes["one"].canary_weight == 50
    assert routes["m11"].ready == {1: VersionInfo(1, 32)}
    assert routes["m11"].production is None


def test_a_model_published_while_the_state_is_read_waits_for_the_next_read(
    db: RegistryDatabase, make_ready: ReadyFactory
) -> None:
    make_ready("early", **_context(32))
    published = False

    def publish_after_the_models_query(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        nonlocal published
        if not published and "FROM models" in statement:  # before the queries after it
            published = True
            make_ready("late", **_context(32))
            with writing(db) as session:
                point(session, "late", "production", 1)

    event.listen(db.engine, "after_cursor_execute", publish_after_the_models_query)
    try:
        with reading(db) as session:
            state = serving_state(session=session)
    finally:
        event.remove(db.engine, "after_cursor_execute", publish_after_the_models_query)
    assert published
    assert set(state.ready) == set(state.aliases) == {"early"}
    assert RouteTable(db).reload()["late"].production == VersionInfo(1, 32)


def _fleet_registry(db: RegistryDatabase, make_ready: ReadyFactory) -> None:
    """Models in the states the workers' versions depend on."""
    for model, count in (("plain", 2), ("canaried", 3), ("cleared", 2), ("failed", 1)):
        for _ in range(count):
            make_ready(model)
    make_ready("nothing")
    make_ready("archived")
    make_ready("archived")
    with writing(db) as session:
        catalog.register_version(session=session, model="failed", dataset_sha256=DATASET)
        point(session, "plain", "production", 1)
        point(session, "plain", "production", 2)  # a rollback returns to 1
        point(session, "canaried", "production", 1)
        point(session, "canaried", "canary", 3, 10)
        point(session, "cleared", "production", 1)
        point(session, "cleared", "canary", 2, 10)
        aliases.clear_alias(
            session=session, model="cleared", alias="canary", actor="tester", reason="test"
        )
        point(session, "failed", "production", 1)
        point(session, "archived", "production", 1)
        point(session, "archived", "production", 2)
        catalog.archive_version(session=session, model="archived", version=1, reason="test")


def test_the_versions_workers_hold_follow_aliases_rollbacks_grace_and_readiness(
    db: RegistryDatabase, make_ready: ReadyFactory
) -> None:
    _fleet_registry(db, make_ready)
    models = ["archived", "canaried", "cleared", "failed", "nothing", "plain"]

    def each(**options: Any) -> dict[str, list[int]]:
        return {m: versions_to_serve(db, m, **options) for m in models}

    assert each(newest=False) == {
        "archived": [2],  # the rollback target, 1, is archived
        "canaried": [1, 3],
        "cleared": [1],
        "failed": [1],
        "nothing": [],
        "plain": [1, 2],
    }
    assert each(newest=True) == {
        "archived": [2],
        "canaried": [1, 3],
        "cleared": [1, 2],
        "failed": [1],
        "nothing": [1],
        "plain": [1, 2],
    }
    # Within the grace period, what an alias stopped naming stays: the cleared canary.
    assert each(newest=False, grace_s=3600)["cleared"] == [1, 2]
    with pytest.raises(ModelNotFound):
        versions_to_serve(db, "absent")


def test_every_models_versions_are_read_in_a_fixed_number_of_queries(
    db: RegistryDatabase, make_ready: ReadyFactory
) -> None:
    _fleet_registry(db, make_ready)
    for options in ({"newest": False}, {"newest": True}, {"newest": False, "grace_s": 3600}):
        with _statements(db) as statements:
            together = versions_to_serve_all(db, **options)
        one_by_one = {m: versions_to_serve(db, m, **options) for m in together}
        assert together == one_by_one
        assert len(together) == 6
        assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) <= 5
