"""Cancel a non-streamed generation when its client goes away.

Streamed responses are cancelled by the server when the client disconnects; a plain JSON
request would otherwise generate to the end for nobody. `unless_disconnected` cancels the work
(and with it the Triton request, which frees its batch slot) when the client leaves first.

ASGI tells an app that its client left only through `receive`, so an app that wants to know
while it works must keep a task waiting on `receive`: a task, an event waiter and a
cancellation per request, about a tenth of the gateway's own CPU per request. The gateway's
HTTP protocol (`gateway.server.http1`) offers a cheaper way as a scope extension,
`scope["extensions"]["tollgate.disconnect"]["watch"]`: a `ConnectionWatch` that calls back
when the connection is lost. `unless_disconnected` uses it where the server offers it, and
watches `receive` under any other server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")

EXTENSION = "tollgate.disconnect"


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class ConnectionWatch:
    """One connection's watch: calls back what is subscribed when the connection is lost.

    `resume_reading` is the server's: a connection that is not being read (flow control)
    would not notice its client leaving, so subscribing resumes reading, as ASGI's `receive`
    does."""

    __slots__ = ("_callbacks", "_resume_reading", "lost")

    def __init__(self, resume_reading: Callable[[], None] | None = None) -> None:
        self.lost = False
        self._callbacks: list[Callable[[], None]] = []
        self._resume_reading = resume_reading

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the connection is lost, or now if it already is."""
        if self.lost:
            callback()
            return
        if self._resume_reading is not None:
            self._resume_reading()
        self._callbacks.append(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    def lose(self) -> None:
        """The connection is gone (the server calls this): call back what is subscribed."""
        self.lost = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


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

    stop: Callable[[], object]
    offered = (request.scope.get("extensions") or {}).get(EXTENSION)
    if offered is not None:
        watch: ConnectionWatch = offered["watch"]
        watch.subscribe(leave)
        stop = functools.partial(watch.unsubscribe, leave)
    else:

        async def watch_receive() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            leave()

        stop = asyncio.ensure_future(watch_receive()).cancel
    try:
        return await work
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:  # the client's leaving, and only that cancellation
            raise ClientGone from None
        raise
    finally:
        stop()
