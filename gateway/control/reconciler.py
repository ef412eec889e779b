"""Making Triton follow the registry: the versions each worker holds.

Before an alias may point at a version, `Fleet.ensure` loads it on every healthy Triton
endpoint (explicit model control; the model's configuration lists its versions with a
specific version policy, sent with the load request so no worker needs the gateway's files)
and checks that each reports it ready. A version that fails to load is never made live: the
caller gets Triton's reason. Versions no alias needs any more are unloaded by the reconciler,
`unload_grace_s` after the last alias left them (Triton unloads a version only once its
in-flight requests have finished). The reconciler also brings a worker that restarted or
joined later to the same state, every `reconcile_interval_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Literal

import grpc
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from gateway.config import GatewaySettings
from gateway.errors import GatewayError, Unavailable
from gateway.generation.routing import RouteTable
from gateway.server.background import Every
from gateway.telemetry.metrics import Metrics
from gateway.triton.pool import Endpoint, TritonPool
from hosting.model_config import model_config
from hosting.serving_plan import versions_to_serve, versions_to_serve_all
from registry.db import RegistryDatabase
from registry.errors import RegistryError

log = logging.getLogger("tollgate.gateway.fleet")


class VersionNotServable(GatewayError):
    """A version could not be loaded (or made ready) on a worker; nothing was changed."""

    status, code = 409, "version_not_servable"


class _ModelLock(asyncio.Lock):
    """A model's lock, counting how often it has been taken."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = 0

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self.taken += 1
        return True


class Fleet:
    def __init__(
        self,
        *,
        settings: GatewaySettings,
        db: RegistryDatabase,
        pool: TritonPool,
        routes: RouteTable,
        metrics: Metrics,
    ) -> None:
        self.settings, self.db, self.pool, self.metrics = settings, db, pool, metrics
        self.routes = routes
        self._locks: defaultdict[str, _ModelLock] = defaultdict(_ModelLock)
        # (endpoint, model) -> (monotonic time before which not to retry, delay used)
        self._backoff: dict[tuple[str, str], tuple[float, float]] = {}
        self._job = Every(
            settings.reconcile_interval_s, self.reconcile, name="tollgate-fleet", log=log
        )
        # (endpoint, model, version) -> when this replica first saw it loaded but not wanted
        self._unneeded: dict[tuple[str, str, int], float] = {}

    def config_json(self, model: str, versions: list[int]) -> str:
        """The model's Triton configuration, as the JSON a load request carries."""
        config = text_format.Parse(
            model_config(model, versions, self.settings.engine, self.settings.triton),
            model_config_pb2.ModelConfig(),
        )
        return json_format.MessageToJson(config, preserving_proto_field_name=True)

    async def wanted(self, model: str, *, also: int | None = None) -> set[int]:
        """The versions workers should hold now (plus `also`, about to be made live)."""
        versions = set(
            await asyncio.to_thread(
                versions_to_serve,
                self.db,
                model,
                grace_s=self.settings.unload_grace_s,
                newest=False,
            )
        )
        if also is not None:
            versions.add(also)
        return versions

    def lock(self, model: str) -> _ModelLock:
        """Held around "load, then change the alias", so this replica's reconciler never
        works from a state read in between."""
        return self._locks[model]

    async def ensure(self, model: str, versions: set[int]) -> None:
        """Make every healthy endpoint hold `versions` of `model`, each ready (and unload
        what is not wanted and past its grace), or raise VersionNotServable (a load failed)
        or Unavailable (no worker answers). The caller holds `lock(model)`."""
        endpoints = [e for e in self.pool.endpoints if e.healthy]
        if not endpoints:
            raise Unavailable("no Triton worker is reachable to load the version on")
        outcomes = await asyncio.gather(
            *(self._ensure_on(e, model, versions) for e in endpoints),
            return_exceptions=True,
        )
        problems = [o for o in outcomes if isinstance(o, BaseException)]
        for problem in problems:
            if not isinstance(problem, GatewayError):
                raise problem
        if problems:
            raise VersionNotServable("; ".join(str(p) for p in problems))

    def _target(
        self, endpoint: Endpoint, model: str, wanted: set[int], ready: set[int]
    ) -> set[int]:
        """`wanted`, plus loaded versions this replica has not yet seen unwanted for
        `unload_grace_s`: a version another replica just loaded for a change it is about to
        commit is never unloaded under it."""
        now = time.monotonic()
        keep = set(wanted)
        for version in ready - wanted:
            since = self._unneeded.setdefault((endpoint.url, model, version), now)
            if now - since < self.settings.unload_grace_s:
                keep.add(version)
        for version in wanted:
            self._unneeded.pop((endpoint.url, model, version), None)
        return keep

    async def _ensure_on(
        self, endpoint: Endpoint, model: str, wanted: set[int], ready: set[int] | None = None
    ) -> None:
        """`wanted` (and what `_target` keeps) onto one endpoint. `ready` is what it held
        when the caller asked (a round's index); before acting on it, what the endpoint holds
        is asked again, so a version another replica loaded since is seen, and kept."""
        try:
            if ready is None or self._target(endpoint, model, wanted, ready) != ready:
                ready = await endpoint.ready_versions(model)
            versions = self._target(endpoint, model, wanted, ready)
            if ready == versions:
                return
            started = time.perf_counter()
            config = self.config_json(model, sorted(versions))
            await endpoint.load_model(model, config, self.settings.model_load_timeout_s)
            ready = await endpoint.ready_versions(model)
        except grpc.aio.AioRpcError as exc:
            self.metrics.model_loads.labels(model, "failed").inc()
            raise VersionNotServable(
                f"{model} on {endpoint.url}: {exc.details() or exc.code().name}"
            ) from exc
        missing = wanted - ready
        if missing:
            self.metrics.model_loads.labels(model, "failed").inc()
            raise VersionNotServable(
                f"{model} on {endpoint.url}: versions {sorted(missing)} are not ready after loading"
            )
        self.metrics.model_loads.labels(model, "ok").inc()
        log.info(
            "%s on %s now holds versions %s (%.1f s)",
            model,
            endpoint.url,
            sorted(versions),
            time.perf_counter() - started,
        )

    # -- the reconciler ---------------------------------------------------------------------
    async def start(self) -> None:
        self._job.start()

    async def stop(self) -> None:
        await self._job.stop()

    async def reconcile(self, models: list[str] | None = None) -> None:
        """One round: each model's wanted versions onto every healthy endpoint. A worker
        where that fails is left alone for a while (doubling up to 10 minutes).

        What every model needs is read from the registry at once, and what each endpoint
        holds is asked once per round, not once per model. A model whose lock was taken
        since that read (a change made by this replica) has its needs read again under the
        lock, so the reconciler never works from a state read in between."""
        names = models if models is not None else list(self.routes.routes)
        if not names:
            return
        # How often each lock had been taken; None when someone holds it now.
        taken = {
            model: None if lock.locked() else lock.taken
            for model, lock in ((m, self._locks[m]) for m in names)
        }
        try:
            wanted = await asyncio.to_thread(
                versions_to_serve_all,
                self.db,
                grace_s=self.settings.unload_grace_s,
                newest=False,
                models=names,
            )
        except RegistryError as exc:
            log.warning("could not read what the models need: %s", exc)
            return
        held: dict[str, dict[str, set[int]]] = {}  # endpoint -> its ready index, this round
        for model in names:
            lock = self._locks[model]
            async with lock:
                versions: set[int] | None = set(wanted.get(model, ()))
                before = taken[model]
                if before is None or lock.taken != before + 1:  # held by someone since
                    versions = await self._read_wanted(model)
                    held.clear()
                if versions:
                    await self._reconcile_model(model, versions, held)

    async def _read_wanted(self, model: str) -> set[int] | None:
        try:
            return await self.wanted(model)
        except RegistryError as exc:
            log.warning("could not read what %s needs: %s", model, exc)
            return None

    async def _reconcile_model(
        self, model: str, versions: set[int], held: dict[str, dict[str, set[int]]]
    ) -> None:
        for endpoint in [e for e in self.pool.endpoints if e.healthy]:
            key = (endpoint.url, model)
            not_before, delay = self._backoff.get(key, (0.0, 0.0))
            if time.monotonic() < not_before:
                continue
            try:
                if endpoint.url not in held:
                    held[endpoint.url] = await endpoint.ready_index()
                ready = held[endpoint.url].get(model, set())
                await self._ensure_on(endpoint, model, versions, ready)
            except (GatewayError, grpc.aio.AioRpcError) as exc:
                held.pop(endpoint.url, None)
                delay = min(600.0, max(2 * delay, 30.0))
                self._backoff[key] = (time.monotonic() + delay, delay)
                log.warning("reconcile %s: %s; next try in %.0f s", model, exc, delay)
            else:
                self._backoff.pop(key, None)
