"""Cancel a non-streamed generation when its client goes away.

Streamed responses are cancelled by the server when the client disconnects; a plain JSON
request would otherwise generate to the end for nobody. `unless_disconnected` races the work
against the connection's `http.disconnect` message and cancels the work (and with it the
Triton request, which frees its batch slot) when the client leaves first.
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
    """Await `work` in this task while a watcher task waits for the client to leave; if it
    does, the watcher cancels this task, and so the work, which raises ClientGone here.

    (The work runs in the calling task, not a task of its own: one task fewer per request,
    and the work has always started, so its clean-up and metrics run, even for a client
    that left before the gateway got to it.)"""
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        while (await request.receive())["type"] != "http.disconnect":
            pass
        left = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:  # the watcher's cancellation, and only that one
            raise ClientGone from None
        raise
    finally:
        watcher.cancel()
