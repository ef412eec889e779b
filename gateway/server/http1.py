"""uvicorn's HTTP/1.1 protocol (httptools), writing a JSON answer's head and body together.

uvicorn writes a response's status line and headers when the app sends `http.response.start`,
and its body when the app sends `http.response.body`: two writes to the socket, and two
wake-ups of the client, for every plain JSON answer. `OneWriteHttpToolsProtocol` holds the
head of a response whose length is known (`Content-Length`, a body to come, not `HEAD`) until
the body's first part comes, and writes both at once. Every other write passes straight through,
so a streamed answer's (chunked) head still leaves at once, before its first event, and
`100 Continue` is not held. If the app fails between the two, the connection is closed, as
uvicorn closes it then anyway: the client gets no head it would have had to discard.

It also tells a request's work when the connection is lost, through the
`tollgate.disconnect` scope extension (`gateway.server.disconnect.ConnectionWatch`), without a task
waiting on `receive` for every request.

The gateway serves with it (`python -m gateway serve`, `run`); it changes nothing else of
uvicorn's, and a uvicorn whose request cycle lacks what it relies on fails its tests.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from gateway.server.disconnect import EXTENSION, ConnectionWatch


class _HeadWithBody:
    """The transport as one request's cycle sees it.

    It knows its cycle only weakly: the cycle holds it, and a reference cycle would keep every
    request's cycle, scope and what hangs off them alive until the collector found them."""

    def __init__(self, transport: Any, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = weakref.ref(cycle)
        self._head_seen = False
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif (
            not self._head_seen and (cycle := self._cycle()) is not None and cycle.response_started
        ):
            # The first write once the response has started is its head.
            self._head_seen = True
            if (
                cycle.chunked_encoding is False
                and cycle.expected_content_length > 0
                and cycle.scope["method"] != "HEAD"
            ):
                self._held = data
                return
        self._transport.write(data)

    def close(self) -> None:
        self._held = None
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering in one write, and offering each request the
    `tollgate.disconnect` scope extension (`gateway.server.disconnect`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.watch = ConnectionWatch(self.flow.resume_reading)
        self._extension: dict[object, object] = {"watch": self.watch}

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.watch.lose()

    def on_headers_complete(self) -> None:
        self.scope.setdefault("extensions", {})[EXTENSION] = self._extension
        super().on_headers_complete()
        cycle = self.cycle
        # (An upgrade request returns early, leaving the previous cycle, already wrapped.)
        if cycle is not None and not isinstance(cycle.transport, _HeadWithBody):
            cycle.transport = _HeadWithBody(self.transport, cycle)  # type: ignore[assignment]
