"""`unless_disconnected`: the work of a plain request stops when its client leaves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from gateway.disconnect import ClientGone, unless_disconnected


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

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


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
    assert asyncio.run(unless_disconnected(_request(None), work())) == "answer"
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
        with pytest.raises(ClientGone):
            await unless_disconnected(_request(0), work())

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
