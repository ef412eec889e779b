"""Cancel a non-streamed generation when its client goes away.

Streamed responses are cancelled by the server when the client disconnects; a plain JSON
request would otherwise generate to the end for nobody. `unless_disconnected` cancels the work
(and with it the Triton request, which frees its batch slot) when the client leaves first.

ASGI tells an app that its client left only through `receive`, so `unless_disconnected` keeps
a task waiting on `receive` while the work runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work` in this task; if the client leaves first, cancel this task, and so the
    work, which raises ClientGone here.

    (The work runs in the calling task, not a task of its own: one task fewer per request,
    and the work has always started, so its clean-up and metrics run, even for a client
    that left before the gateway got to it.)"""
    task = asyncio.current_task()
    assert task is not None
    left = False

    def leave() -> None:
        nonlocal left
        left = True
        task.cancel()

    async def watch_receive() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        leave()

    watcher = asyncio.ensure_future(watch_receive())
    try:
        return await work
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:  # the client's leaving, and only that cancellation
            raise ClientGone from None
        raise
    finally:
        watcher.cancel()
