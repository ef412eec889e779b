"""The gateway's server: what its app builds at startup is kept out of full collections, and
the youngest generation is not collected every few requests."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import uvicorn

from gateway.cli import YOUNG_GC_THRESHOLD, _Server


def test_what_the_app_builds_at_startup_is_frozen_and_what_requests_build_is_not() -> None:
    built: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                built["clients"] = [object(), {"routes": []}]
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    config.load()
    server = _Server(config)
    server.lifespan = config.lifespan_class(config)

    def tracked(obj: object) -> bool:
        """Whether the collector's generations (not the frozen ones) hold obj."""
        return any(o is obj for o in gc.get_objects())

    async def main() -> None:
        gc.unfreeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(700, *thresholds[1:])
        await server.startup()
        try:
            later = [{"request": 1}]
            assert not tracked(built["clients"])
            assert gc.get_freeze_count() > 0
            assert tracked(later)
            assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *thresholds[1:])
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)
            await server.shutdown()

    asyncio.run(main())
