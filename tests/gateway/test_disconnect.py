"""`unless_disconnected`: the work of a plain request stops when its client leaves."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.config import Config

from gateway.server.disconnect import ClientGone, unless_disconnected
from tests.published import free_port


def _request(leaves_after_s: float | None) -> Request:
    """A request whose client leaves after `leaves_after_s` (None: it stays)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"{}", "more_body": False}
        if leaves_after_s is None:
            await asyncio.Event().wait()
        await asyncio.sleep(leaves_after_s or 0)
        return {"type": "http.disconnect"}

    scope: dict[str, Any] = {"type": "http", "method": "POST", "headers": []}
    return Request(scope, receive)


class Work:
    def __init__(self, duration_s: float) -> None:
        self.duration_s = duration_s
        self.started = self.finished = self.cleaned_up = False

    async def __call__(self) -> str:
        self.started = True
        try:
            await asyncio.sleep(self.duration_s)
            self.finished = True
            return "answer"
        finally:
            self.cleaned_up = True


def test_the_answer_comes_back_when_the_client_stays() -> None:
    work = Work(0.01)

    async def scenario() -> str:
        return await unless_disconnected(_request(None), work())

    assert asyncio.run(scenario()) == "answer"
    assert work.finished


def test_a_client_that_leaves_cancels_the_work() -> None:
    work = Work(5)

    async def scenario() -> None:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ClientGone):
            await unless_disconnected(_request(0.02), work())
        assert asyncio.get_running_loop().time() - started < 1
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        await asyncio.sleep(0)  # the task goes on normally afterwards

    asyncio.run(scenario())
    assert (work.started, work.cleaned_up, work.finished) == (True, True, False)


def test_work_whose_client_left_before_it_began_still_starts_and_cleans_up() -> None:
    """Its clean-up is where the generation's outcome is counted and its tokens refunded."""
    work = Work(5)

    async def scenario() -> None:
        request = _request(0)
        await asyncio.sleep(0.01)  # the client is gone before the work begins
        with pytest.raises(ClientGone):
            await unless_disconnected(request, work())

    asyncio.run(scenario())
    assert (work.started, work.cleaned_up, work.finished) == (True, True, False)


def test_cancelling_the_request_itself_is_not_mistaken_for_the_client_leaving() -> None:
    work = Work(5)

    async def scenario() -> None:
        task = asyncio.ensure_future(unless_disconnected(_request(None), work()))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert (work.cleaned_up, work.finished) == (True, False)


def test_a_real_server_cancels_the_work_of_a_client_that_hangs_up() -> None:
    """Through real sockets, on the server stack the gateway serves with (uvicorn, httptools):
    the client hangs up mid-request and the work stops within moments."""
    seen: dict[str, Any] = {}

    async def slow(request: Request) -> Response:
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
            http="httptools",
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
    assert seen["outcome"] == "gone"
