"""The gateway's HTTP/1.1 protocol: a JSON answer leaves in one write, nothing else changes."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway import cli
from gateway.config import GatewaySettings
from gateway.server.disconnect import EXTENSION, ClientGone, unless_disconnected
from gateway.server.http1 import OneWriteHttpToolsProtocol
from tests.published import free_port


class Recorder:
    """A transport that keeps every write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _json(request: Request) -> Response:
    return JSONResponse({"echo": (await request.body()).decode()})


async def _stream(request: Request) -> Response:
    async def parts() -> Any:
        yield b"data: one\n\n"
        await asyncio.sleep(0.01)
        yield b"data: two\n\n"

    return StreamingResponse(parts(), media_type="text/event-stream")


async def _empty(request: Request) -> Response:
    return Response(status_code=204)


async def _fails_after_start(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    raise RuntimeError("the app failed between head and body")


APP = Starlette(
    routes=[
        Route("/json", _json, methods=["POST", "GET", "HEAD"]),
        Route("/stream", _stream),
        Route("/empty", _empty),
        Mount("/fails", app=_fails_after_start),
    ]
)


def exchange(raw: bytes) -> Recorder:
    """Feed `raw` to a fresh connection and let every request on it finish."""

    async def scenario() -> Recorder:
        config = Config(app=APP, lifespan="off", log_config=None)
        protocol = OneWriteHttpToolsProtocol(
            config=config, server_state=ServerState(), app_state={}
        )
        transport = Recorder()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(raw)
        async with asyncio.timeout(5):
            while protocol.tasks or protocol.pipeline:
                await asyncio.sleep(0.001)
        return transport

    return asyncio.run(scenario())


def test_a_json_answer_leaves_in_one_write_head_and_body_together() -> None:
    sent = exchange(b"POST /json HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello")
    assert len(sent.writes) == 1
    head, _, body = sent.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"content-length: 16" in head.lower()
    assert body == b'{"echo":"hello"}'


def test_pipelined_requests_each_get_one_whole_answer() -> None:
    one = b"POST /json HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\n\r\na"
    two = b"POST /json HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\n\r\nb"
    sent = exchange(one + two)
    assert len(sent.writes) == 2
    assert sent.writes[0].endswith(b'{"echo":"a"}')
    assert sent.writes[1].endswith(b'{"echo":"b"}')


def test_a_streamed_answer_sends_its_head_at_once_before_the_first_event() -> None:
    sent = exchange(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
    head = sent.writes[0]
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert head.endswith(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"data: one" in sent.writes[1]
    assert b"data: two" in sent.writes[2]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"HEAD /json HTTP/1.1\r\nhost: t\r\n\r\n", b"200"),  # a length, but no body follows
        (b"GET /empty HTTP/1.1\r\nhost: t\r\n\r\n", b"204"),  # no body at all
    ],
)
def test_a_head_with_no_body_to_come_is_not_held(raw: bytes, status: bytes) -> None:
    writes = [w for w in exchange(raw).writes if w]  # (uvicorn writes an empty body: a no-op)
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 " + status)
    assert writes[0].endswith(b"\r\n\r\n")


def test_an_app_failing_between_head_and_body_closes_the_connection_sending_nothing() -> None:
    sent = exchange(b"GET /fails/ HTTP/1.1\r\nhost: t\r\n\r\n")
    assert sent.closed
    assert sent.writes == []


def test_a_finished_request_is_freed_at_once_not_left_to_the_collector() -> None:
    """The cycle holds its transport; the transport must not hold the cycle back."""

    async def scenario() -> bool:
        config = Config(app=APP, lifespan="off", log_config=None)
        protocol = OneWriteHttpToolsProtocol(
            config=config, server_state=ServerState(), app_state={}
        )
        protocol.connection_made(Recorder())  # type: ignore[arg-type]
        request = b"POST /json HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\n\r\na"
        protocol.data_received(request)
        first = weakref.ref(protocol.cycle)
        async with asyncio.timeout(5):
            while protocol.tasks:
                await asyncio.sleep(0.001)
        protocol.data_received(request)  # the next request replaces it on the connection
        async with asyncio.timeout(5):
            while protocol.tasks:
                await asyncio.sleep(0.001)
        return first() is None

    gc.disable()
    try:
        assert asyncio.run(scenario())
    finally:
        gc.enable()


@pytest.mark.parametrize(
    ("http", "offered"),
    [(OneWriteHttpToolsProtocol, True), ("httptools", False)],
    ids=["gateway-protocol", "uvicorn-protocol"],
)
def test_a_real_server_cancels_the_work_of_a_client_that_hangs_up(http: Any, offered: bool) -> None:
    """Through real sockets: with the gateway's protocol the work hears of it through the
    `tollgate.disconnect` extension, with uvicorn's own through `receive`; either way it stops."""
    seen: dict[str, Any] = {}

    async def slow(request: Request) -> Response:
        seen["offered"] = EXTENSION in request.scope.get("extensions", {})
        seen["started"].set()

        async def work() -> str:
            await asyncio.sleep(30)
            return "too late"

        try:
            return Response(await unless_disconnected(request, work()))
        except ClientGone:
            seen["outcome"] = "gone"
            raise

    async def scenario() -> float:
        seen["started"] = asyncio.Event()
        port = free_port()
        config = Config(
            app=Starlette(routes=[Route("/slow", slow, methods=["POST"])]),
            port=port,
            http=http,
            lifespan="off",
            log_config=None,
            log_level="critical",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        serving = asyncio.ensure_future(server.serve())
        try:
            async with asyncio.timeout(10):
                while not server.started:
                    await asyncio.sleep(0.01)
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"POST /slow HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}")
                await seen["started"].wait()
                left = time.perf_counter()
                writer.close()
                while "outcome" not in seen:
                    await asyncio.sleep(0.005)
                return time.perf_counter() - left
        finally:
            server.should_exit = True
            await serving

    assert asyncio.run(scenario()) < 2
    assert seen["offered"] is offered
    assert seen["outcome"] == "gone"


def test_the_gateway_serves_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)
    assert cli._uvicorn(GatewaySettings()).config.http is OneWriteHttpToolsProtocol
