"""Concurrent writers on real connections: version numbers and alias changes serialize."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from registry import aliases, catalog
from registry.db import RegistryDatabase, reading, writing
from tests.registry.conftest import DATASET, ReadyFactory

T = TypeVar("T")
WRITERS = 12


def _all_at_once(count: int, work: Callable[[int], T]) -> list[T]:
    """Run `work(i)` in `count` threads released together; re-raise any failure."""
    barrier = threading.Barrier(count)

    def run(i: int) -> T:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def test_concurrent_registrations_of_a_new_model_never_collide(db: RegistryDatabase) -> None:
    def register(i: int) -> int:
        with writing(db) as session:
            v = catalog.register_version(
                session=session, model="fresh", dataset_sha256=DATASET, created_by=f"writer-{i}"
            )
            return v.version

    numbers = _all_at_once(WRITERS, register)
    assert sorted(numbers) == list(range(1, WRITERS + 1))
    with reading(db) as session:
        listed = catalog.list_versions(session=session, model="fresh", limit=100).items
        assert catalog.get_model(session=session, name="fresh").last_version == WRITERS
    assert sorted(v.version for v in listed) == list(range(1, WRITERS + 1))


def test_an_alias_change_waits_for_the_one_in_flight(
    db: RegistryDatabase, make_ready: ReadyFactory
) -> None:
    for _ in range(3):
        make_ready()
    with writing(db) as session:
        aliases.set_alias(
            session=session, model="demo", alias="production", version=1, actor="a", reason="r"
        )
    first_holds_lock = threading.Event()

    def first() -> None:
        with writing(db) as session:
            aliases.set_alias(
                session=session,
                model="demo",
                alias="production",
                version=2,
                actor="first",
                reason="r",
            )
            first_holds_lock.set()
            time.sleep(0.5)  # the second change starts while this transaction is still open

    def second() -> None:
        first_holds_lock.wait(5)
        with writing(db) as session:
            aliases.set_alias(
                session=session,
                model="demo",
                alias="production",
                version=3,
                actor="second",
                reason="r",
            )

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(first), pool.submit(second)]:
            future.result()
    with reading(db) as session:
        events = list(reversed(aliases.list_history(session=session, model="demo").items))
        state = aliases.get_aliases(session=session, model="demo")
    assert [(e.actor, e.from_version, e.to_version) for e in events[1:]] == [
        ("first", 1, 2),
        ("second", 2, 3),
    ]
    assert [s.version for s in state] == [3]


def test_many_concurrent_alias_changes_form_one_unbroken_chain(
    db: RegistryDatabase, make_ready: ReadyFactory
) -> None:
    versions = [make_ready().version for _ in range(8)]

    def promote(i: int) -> None:
        with writing(db) as session:
            aliases.set_alias(
                session=session,
                model="demo",
                alias="production",
                version=versions[i],
                actor=f"op-{i}",
                reason="r",
            )

    _all_at_once(len(versions), promote)
    with reading(db) as session:
        events = list(
            reversed(aliases.list_history(session=session, model="demo", limit=100).items)
        )
        state = aliases.get_aliases(session=session, model="demo")
    assert len(events) == len(versions)
    assert events[0].from_version is None
    for before, after in itertools.pairwise(events):
        assert after.from_version == before.to_version, "a change was made against a stale state"
        assert after.created_at >= before.created_at
    assert state[0].version == events[-1].to_version
