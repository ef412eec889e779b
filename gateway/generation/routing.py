"""Which Triton model version serves a request: the registry's aliases, cached.

`production` takes the traffic; a `canary` with weight w takes w % of callers, chosen by a
stable hash of the caller and the model, so each caller stays on one side. A caller with the
admin scope may pin a version. The table is re-read from the registry every
`route_refresh_s` (at most 2 s), so every gateway replica follows an alias change within that;
with Redis, a replica that changes an alias also publishes a notice on `ROUTES_CHANNEL`, and
every replica re-reads the table as soon as it hears one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import NotFound, Unavailable
from gateway.server.background import Every
from registry.db import RegistryDatabase, reading
from registry.errors import RegistryError
from registry.serving import hyperparameters_of, serving_state

log = logging.getLogger("tollgate.gateway.routing")

ROUTES_CHANNEL = "tollgate:routes"


@dataclass(frozen=True)
class VersionInfo:
    version: int
    context_length: int


@dataclass(frozen=True)
class Route:
    model: str
    production: VersionInfo | None
    canary: VersionInfo | None = None
    canary_weight: int = 0
    ready: dict[int, VersionInfo] = field(default_factory=dict)  # every ready version

    def choose(self, caller: str) -> tuple[VersionInfo, str]:
        """(version, alias) for this caller."""
        if (
            self.canary is not None
            and self.canary_weight > 0
            and bucket_of(self.model, caller) < self.canary_weight * 100
        ):
            return self.canary, "canary"
        if self.production is None:
            raise Unavailable(
                f"model '{self.model}' has no production version", code="no_production_version"
            )
        return self.production, "production"


def bucket_of(model: str, caller: str) -> int:
    """A stable number in [0, 10000) for a caller of a model (basis points)."""
    digest = hashlib.sha256(f"{model}\x00{caller}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10000


class RouteTable:
    """The routes of every model, refreshed from the registry in the background."""

    def __init__(self, db: RegistryDatabase, refresh_s: float = 2.0) -> None:
        self.db = db
        self.refresh_s = refresh_s
        self.routes: dict[str, Route] = {}
        self.refreshed_at = -float("inf")  # monotonic time of the last successful read
        self._versions: dict[tuple[str, int], VersionInfo] = {}  # versions never change
        self._job = Every(self.refresh_s, self._reload_quietly, name="tollgate-routes", log=log)
        self._listener: asyncio.Task[None] | None = None
        # Names this replica on its notices: it has re-read already and skips its own.
        self.replica = uuid.uuid4().hex

    def resolve(self, model: str, caller: str, pinned: int | None = None) -> tuple[int, int, str]:
        """(version, context length, alias or 'pinned') for a request, or NotFound."""
        route = self.routes.get(model)
        if route is None:
            raise NotFound(f"no model named '{model}'", code="model_not_found")
        if pinned is not None:
            info = route.ready.get(pinned)
            if info is None:
                raise NotFound(
                    f"model '{model}' has no ready version {pinned}", code="version_not_found"
                )
            return info.version, info.context_length, "pinned"
        info, alias = route.choose(caller)
        return info.version, info.context_length, alias

    def reload(self) -> dict[str, Route]:
        """Read every model's aliases and ready versions (blocking; call off the event loop).

        Three queries whatever the number of models (`registry.serving`), and a fourth only
        for versions it has not seen before, whose context length it keeps."""
        with reading(self.db) as session:
            state = serving_state(session=session)
            unseen = {
                row_id: (name, version)
                for name, versions in state.ready.items()
                for version, row_id in versions.items()
                if (name, version) not in self._versions
            }
            if unseen:
                for row_id, hyperparameters in hyperparameters_of(
                    session=session, row_ids=unseen
                ).items():
                    name, version = unseen[row_id]
                    context = int(hyperparameters.get("model", {}).get("context_length", 0))
                    self._versions[(name, version)] = VersionInfo(version, context)
        routes: dict[str, Route] = {}
        for name, versions in state.ready.items():
            ready = {v: self._versions[(name, v)] for v in versions}
            states = state.aliases[name]
            production, canary = states.get("production"), states.get("canary")
            routes[name] = Route(
                model=name,
                production=ready.get(production.version) if production else None,
                canary=ready.get(canary.version) if canary else None,
                canary_weight=(canary.weight or 0) if canary else 0,
                ready=ready,
            )
        self.routes, self.refreshed_at = routes, time.monotonic()
        return routes

    @property
    def fresh(self) -> bool:
        """Whether the last read of the registry succeeded recently (for readiness)."""
        return time.monotonic() - self.refreshed_at < 3 * self.refresh_s + 1

    async def start(self, redis: Redis | None = None) -> None:
        await asyncio.to_thread(self.reload)
        self._job.start()
        if redis is not None:
            self._listener = asyncio.create_task(self._listen(redis), name="tollgate-notices")

    async def stop(self) -> None:
        await self._job.stop()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _reload_quietly(self) -> None:
        try:
            await asyncio.to_thread(self.reload)
        except (RegistryError, OSError, ValueError) as exc:
            log.warning("routing table refresh failed, keeping the last one: %s", exc)
        except Exception:  # the refresher must survive a bad moment of the database
            log.exception("routing table refresh failed, keeping the last one")

    async def announce(self, redis: Redis | None, model: str, timeout_s: float) -> None:
        """Tell every other replica that `model`'s routes changed (best effort: polling
        backs it up)."""
        if redis is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await redis.publish(ROUTES_CHANNEL, f"{self.replica} {model}")
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not announce the route change of %s: %s", model, exc)

    async def _listen(self, redis: Redis) -> None:
        """Re-read the table whenever a replica announces a change (polling still runs)."""
        while True:
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(ROUTES_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        data = message["data"]
                        text = data.decode() if isinstance(data, bytes) else str(data)
                        if text.partition(" ")[0] != self.replica:
                            await self._reload_quietly()
            except (RedisError, OSError) as exc:
                log.warning("route notices unavailable (polling continues): %s", exc)
                await asyncio.sleep(self.refresh_s)
