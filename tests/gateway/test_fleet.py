"""The reconciler's rounds: one registry read and one index per endpoint, and a change made
under a model's lock since that read is never undone (a real registry, fake Triton endpoints)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.config import GatewaySettings
from gateway.control.reconciler import Fleet
from gateway.generation.routing import RouteTable
from gateway.telemetry.metrics import Metrics
from registry.config import RegistrySettings
from registry.db import RegistryDatabase, writing
from tests.registry.conftest import migrated, point, ready_version


class FakeEndpoint:
    """What the reconciler asks of a Triton endpoint, holding versions in a dict."""

    def __init__(self, url: str, on_index: Any = None, after_index: Any = None) -> None:
        self.url, self.healthy = url, True
        self.held: dict[str, set[int]] = {}
        self.indexes = 0  # whole-repository reads
        self.loads: list[tuple[str, list[int]]] = []
        self.on_index, self.after_index = on_index, after_index

    async def ready_index(self) -> dict[str, set[int]]:
        self.indexes += 1
        if self.on_index is not None:
            await self.on_index()
        index = {model: set(versions) for model, versions in self.held.items()}
        if self.after_index is not None:
            self.after_index()
        return index

    async def ready_versions(self, model: str) -> set[int]:
        return set(self.held.get(model, set()))

    async def load_model(self, model: str, config_json: str, timeout_s: float) -> None:
        versions = sorted(
            int(v) for v in json.loads(config_json)["version_policy"]["specific"]["versions"]
        )
        self.loads.append((model, versions))
        self.held[model] = set(versions)


@pytest.fixture
def settings(tmp_path: Path) -> GatewaySettings:
    registry = RegistrySettings(
        var_dir=tmp_path / "var",
        model_repository=tmp_path / "repo",
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
    )
    return GatewaySettings(
        registry=registry,
        unload_grace_s=0,  # nothing kept for other replicas: what is not wanted goes
    )


@pytest.fixture
def db(settings: GatewaySettings) -> Iterator[RegistryDatabase]:
    yield from migrated(settings.registry)


def _ready(db: RegistryDatabase, model: str, count: int) -> None:
    for _ in range(count):
        ready_version(db, model)


def _set(
    db: RegistryDatabase, model: str, alias: str, version: int, weight: int | None = None
) -> None:
    with writing(db) as session:
        point(session, model, alias, version, weight)


def _fleet(settings: GatewaySettings, db: RegistryDatabase, endpoints: list[FakeEndpoint]) -> Fleet:
    routes = RouteTable(db)
    routes.reload()
    pool: Any = SimpleNamespace(endpoints=endpoints)
    return Fleet(settings=settings, db=db, pool=pool, routes=routes, metrics=Metrics())


def test_a_round_reads_each_endpoint_once_and_loads_what_each_model_needs(
    settings: GatewaySettings, db: RegistryDatabase
) -> None:
    _ready(db, "alpha", 1)
    _ready(db, "beta", 2)
    _ready(db, "gamma", 2)
    _set(db, "alpha", "production", 1)
    _set(db, "beta", "production", 1)
    _set(db, "beta", "production", 2)  # a rollback returns to 1: both held
    _set(db, "gamma", "production", 1)
    _set(db, "gamma", "canary", 2, 20)
    endpoints = [FakeEndpoint("triton-a"), FakeEndpoint("triton-b")]
    endpoints[1].held = {"alpha": {1}, "gamma": {1}}
    fleet = _fleet(settings, db, endpoints)

    asyncio.run(fleet.reconcile())
    first = [e.indexes for e in endpoints]
    asyncio.run(fleet.reconcile())

    wanted = {"alpha": {1}, "beta": {1, 2}, "gamma": {1, 2}}
    assert [e.held for e in endpoints] == [wanted, wanted]
    assert endpoints[0].loads == [("alpha", [1]), ("beta", [1, 2]), ("gamma", [1, 2])]
    assert endpoints[1].loads == [("beta", [1, 2]), ("gamma", [1, 2])]
    assert first == [1, 1]
    assert [e.indexes for e in endpoints] == [2, 2]  # and nothing loaded the second time


def test_a_change_made_under_the_lock_after_the_round_read_the_registry_is_kept(
    settings: GatewaySettings, db: RegistryDatabase
) -> None:
    """An operator on this replica promotes beta v2 (load, then alias, under beta's lock)
    while the round is on alpha, after it read what beta needs: the round must not take v2
    away again."""
    _ready(db, "alpha", 1)
    _ready(db, "beta", 2)
    _set(db, "alpha", "production", 1)
    _set(db, "beta", "production", 1)

    async def scenario() -> FakeEndpoint:
        promoted = False

        async def promote_beta_meanwhile() -> None:
            nonlocal promoted
            if promoted:
                return
            promoted = True
            async with fleet.lock("beta"):
                endpoint.held["beta"] = {1, 2}  # loaded first
                await asyncio.to_thread(_set, db, "beta", "production", 2)

        endpoint = FakeEndpoint("triton", on_index=promote_beta_meanwhile)
        endpoint.held = {"alpha": {1}, "beta": {1}}
        fleet = _fleet(settings, db, [endpoint])
        await fleet.reconcile()
        assert promoted
        return endpoint

    endpoint = asyncio.run(scenario())
    assert endpoint.held == {"alpha": {1}, "beta": {1, 2}}
    assert endpoint.loads == []


def test_a_lock_held_when_the_round_starts_makes_it_read_that_model_again(
    settings: GatewaySettings, db: RegistryDatabase
) -> None:
    _ready(db, "beta", 2)
    _set(db, "beta", "production", 1)

    async def scenario() -> FakeEndpoint:
        endpoint = FakeEndpoint("triton")
        endpoint.held = {"beta": {1}}
        fleet = _fleet(settings, db, [endpoint])
        async with fleet.lock("beta"):
            round_ = asyncio.create_task(fleet.reconcile())
            await asyncio.sleep(0.2)  # the round has read the registry, and waits for the lock
            endpoint.held["beta"] = {1, 2}
            await asyncio.to_thread(_set, db, "beta", "production", 2)
        await round_
        return endpoint

    endpoint = asyncio.run(scenario())
    assert endpoint.held == {"beta": {1, 2}}
    assert endpoint.loads == []


def test_before_loading_a_round_asks_again_and_keeps_what_another_replica_just_loaded(
    settings: GatewaySettings, db: RegistryDatabase
) -> None:
    """Another replica loads beta v3 (for a change it is about to commit) after this round
    read the worker's index; this round has to load beta v2, and must not drop v3 with it."""
    _ready(db, "alpha", 1)
    _ready(db, "beta", 3)
    _set(db, "alpha", "production", 1)
    _set(db, "beta", "production", 1)
    _set(db, "beta", "canary", 2, 10)
    graceful = settings.model_copy(update={"unload_grace_s": 60})

    def another_replica_loads_v3() -> None:
        endpoint.held["beta"] = endpoint.held["beta"] | {3}

    endpoint = FakeEndpoint("triton", after_index=another_replica_loads_v3)
    endpoint.held = {"alpha": {1}, "beta": {1}}
    asyncio.run(_fleet(graceful, db, [endpoint]).reconcile())
    assert endpoint.loads == [("beta", [1, 2, 3])]
    assert endpoint.held == {"alpha": {1}, "beta": {1, 2, 3}}
