"""A job that runs one step every few seconds on a task of its own, for the gateway's
watchers (Triton health, routing refresh, worker reconciler, canary gates, drift watch).

The step runs after each interval, never before the first; a step that raises is logged and
the next round runs anyway, so a bad moment of a dependency never stops the watcher. An
interval of 0 means the job never starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable


class Every:
    def __init__(
        self,
        interval_s: float,
        step: Callable[[], Awaitable[None]],
        *,
        name: str,
        log: logging.Logger,
    ) -> None:
        self.interval_s, self.step, self.name, self.log = interval_s, step, name, log
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.step()
            except Exception:  # the job must outlive a bad moment of any dependency
                self.log.exception("%s failed; trying again next round", self.name)
