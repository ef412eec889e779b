"""`unless_disconnected`: the work of a plain request stops when its client leaves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from gateway.server.disconnect import EXTENSION, ClientGone, ConnectionWatch, unless_disconnected


def _request(leaves_after_s: float | None, watched: bool = False) -> Request:
    """A request whose client leaves after `leaves_after_s` (None: it stays). `watched`: the
    server offers the `tollgate.disconnect` extension, and says so only through it."""
    sent = False
    watch = ConnectionWatch()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"{}", "more_body": False}
        assert not watched, "with the extension offered, nothing waits on receive"
        if leaves_after_s is None:
            await asyncio.Event().wait()
        await asyncio.sleep(leaves_after_s or 0)
        return {"type": "http.disconnect"}

    scope: dict[str, Any] = {"type": "http", "method": "POST", "headers": []}
    if watched:
        scope["extensions"] = {EXTENSION: {"watch": watch}}
        if leaves_after_s is not None:
            asyncio.get_running_loop().call_later(leaves_after_s, watch.lose)
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


WATCHED = pytest.mark.parametrize("watched", [False, True], ids=["receive", "extension"])


@WATCHED
def test_the_answer_comes_back_when_the_client_stays(watched: bool) -> None:
    work = Work(0.01)

    async def scenario() -> str:
        return await unless_disconnected(_request(None, watched), work())

    assert asyncio.run(scenario()) == "answer"
    assert work.finished


@WATCHED
def test_a_client_that_leaves_cancels_the_work(watched: bool) -> None:
    work = Work(5)

    async def scenario() -> None:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ClientGone):
            await unless_disconnected(_request(0.02, watched), work())
        assert asyncio.get_running_loop().time() - started < 1
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        await asyncio.sleep(0)  # the task goes on normally afterwards

    asyncio.run(scenario())
    assert (work.started, work.cleaned_up, work.finished) == (True, True, False)


@WATCHED
def test_work_whose_client_left_before_it_began_still_starts_and_cleans_up(watched: bool) -> None:
    """Its clean-up is where the generation's outcome is counted and its tokens refunded."""
    work = Work(5)

    async def scenario() -> None:
        request = _request(0, watched)
        await asyncio.sleep(0.01)  # the client is gone before the work begins
        with pytest.raises(ClientGone):
            await unless_disconnected(request, work())

    asyncio.run(scenario())
    assert (work.started, work.cleaned_up, work.finished) == (True, True, False)


@WATCHED
def test_cancelling_the_request_itself_is_not_mistaken_for_the_client_leaving(
    watched: bool,
) -> None:
    work = Work(5)

    async def scenario() -> None:
        task = asyncio.ensure_future(unless_disconnected(_request(None, watched), work()))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert (work.cleaned_up, work.finished) == (True, False)


def test_a_watch_calls_back_only_what_is_still_subscribed_and_resumes_reading() -> None:
    resumed: list[bool] = []
    calls: list[str] = []
    watch = ConnectionWatch(lambda: resumed.append(True))
    stays, leaves = (lambda: calls.append("stays")), (lambda: calls.append("leaves"))
    watch.subscribe(stays)
    watch.subscribe(leaves)
    watch.unsubscribe(stays)
    watch.unsubscribe(stays)  # twice is harmless
    assert resumed == [True, True], "a paused connection would not see its client leave"
    watch.lose()
    assert calls == ["leaves"]
    watch.subscribe(lambda: calls.append("late"))  # already lost: called back at once
    assert calls == ["leaves", "late"]
