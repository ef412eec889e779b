"""The pipelined admission connection, against the real Redis (and a fake one for a socket)."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from gateway.server.redisline import RedisLine, Script
from tests.services import REDIS_URL, silent_server

pytestmark = pytest.mark.redis

T = TypeVar("T")


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, T]], T]:
    """Each test on asyncio's own event loop and on uvloop's, which the gateway serves on."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coroutine)

    return run


_NAMED = Script("return ARGV[1] .. ':' .. KEYS[1]")


@asynccontextmanager
async def _line(
    url: str = REDIS_URL, timeout_s: float | None = None, **options: Any
) -> AsyncIterator[tuple[RedisLine, Redis]]:
    """A line made from a redis-py client for `url`, and that client; both closed after."""
    client = Redis.from_url(url, **options)
    line = RedisLine.for_client(client, timeout_s)
    assert line is not None
    try:
        yield line, client
    finally:
        await line.close()
        await client.aclose()


def test_concurrent_commands_share_one_connection_and_each_gets_its_own_answer(run: Any) -> None:
    async def scenario() -> tuple[list[object], int]:
        async with _line() as (line, client):
            answers = await asyncio.gather(*(line.execute("ECHO", f"n{i}") for i in range(300)))
            name = f"line-{uuid.uuid4().hex}"
            await line.execute("CLIENT", "SETNAME", name)
            clients = await client.client_list()
            return answers, sum(1 for c in clients if c["name"] == name)

    answers, connections = run(scenario())
    assert answers == [f"n{i}".encode() for i in range(300)]
    assert connections == 1


def test_a_caller_that_gave_up_does_not_shift_the_answers_of_the_next(run: Any) -> None:
    async def scenario() -> object:
        async with _line() as (line, _):
            # BLPOP holds the connection 0.3 s; its caller stops waiting after 0.05 s.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await line.execute("BLPOP", f"empty-{uuid.uuid4().hex}", "0.3")
            return await line.execute("ECHO", "mine")

    assert run(scenario()) == b"mine"


def test_scripts_run_by_digest_and_are_sent_again_after_redis_forgot_them(run: Any) -> None:
    async def scenario() -> tuple[object, object, bool]:
        async with _line() as (line, client):
            await client.script_flush()
            first = await line.evalsha(_NAMED, ["k"], ["a"])  # NOSCRIPT, then EVAL
            known = (await client.script_exists(_NAMED.sha))[0]
            second = await line.evalsha(_NAMED, ["k"], ["b"])
            return first, second, bool(known)

    assert run(scenario()) == (b"a:k", b"b:k", True)


def test_error_replies_raise_and_leave_the_line_usable(run: Any) -> None:
    async def scenario() -> object:
        async with _line() as (line, _):
            with pytest.raises(ResponseError, match="unknown command"):
                await line.execute("NO-SUCH-COMMAND")
            return await line.execute("ECHO", "still")

    assert run(scenario()) == b"still"


def test_the_database_in_the_url_is_selected(run: Any) -> None:
    key = f"line-db-{uuid.uuid4().hex}"

    async def scenario() -> tuple[object, object]:
        base = REDIS_URL.rsplit("/", 1)[0]
        other = Redis.from_url(f"{base}/12")
        async with _line(f"{base}/13") as (line, client):
            try:
                await line.execute("SET", key, "here", "EX", 30)
                return await client.get(key), await other.get(key)
            finally:
                await client.delete(key)
                await other.aclose()

    assert run(scenario()) == (b"here", None)


def test_a_user_and_password_in_the_url_authenticate_the_connection(run: Any) -> None:
    user, password = f"tollgate-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex

    async def scenario() -> object:
        admin = Redis.from_url(REDIS_URL)
        await admin.acl_setuser(
            user, enabled=True, passwords=[f"+{password}"], commands=["+echo", "+select"]
        )
        scheme, rest = REDIS_URL.split("://", 1)
        try:
            async with (
                _line(f"{scheme}://{user}:{password}@{rest}") as (line, _),
                _line(f"{scheme}://{user}:not-{password}@{rest}") as (wrong, _),
            ):
                with pytest.raises(RedisError, match="WRONGPASS"):
                    await wrong.execute("ECHO", "x")
                return await line.execute("ECHO", "authenticated")
        finally:
            await admin.acl_deluser(user)
            await admin.aclose()

    assert run(scenario()) == b"authenticated"


def test_a_lost_connection_fails_what_waits_and_the_next_command_reconnects(run: Any) -> None:
    async def scenario() -> tuple[BaseException | object, object]:
        name = f"line-{uuid.uuid4().hex}"
        async with _line() as (line, client):
            await line.execute("CLIENT", "SETNAME", name)
            waiting = asyncio.ensure_future(line.execute("BLPOP", f"e-{uuid.uuid4().hex}", "5"))
            await asyncio.sleep(0.05)
            for c in await client.client_list():
                if c["name"] == name:
                    await client.client_kill_filter(_id=c["id"])
            failed = await asyncio.gather(waiting, return_exceptions=True)
            return failed[0], await line.execute("ECHO", "again")

    failed, again = run(scenario())
    assert isinstance(failed, RedisConnectionError)
    assert again == b"again"


def test_a_refused_connection_is_a_redis_connection_error(run: Any) -> None:
    async def scenario() -> None:
        async with _line("redis://127.0.0.1:9/0") as (line, _):
            with pytest.raises(RedisConnectionError, match="could not connect"):
                await line.execute("PING")

    run(scenario())


def test_a_unix_socket_url_is_followed(tmp_path: Path, run: Any) -> None:
    """A stand-in server on a Unix socket answering every command with +OK, selecting 3."""
    path = tmp_path / "redis.sock"
    seen: list[bytes] = []

    async def scenario() -> object:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(4096):
                seen.append(data)
                writer.write(b"+OK\r\n" * data.count(b"*"))
            writer.close()

        server = await asyncio.start_unix_server(serve, path=str(path))
        try:
            async with _line(f"unix://{path}?db=3") as (line, _):
                return await line.execute("PING")
        finally:
            server.close()
            await server.wait_closed()

    assert run(scenario()) == b"OK"
    sent = b"".join(seen)
    assert b"SELECT\r\n$1\r\n3" in sent
    assert b"PING" in sent


def test_a_server_that_accepts_and_never_answers_the_handshake_fails_within_the_timeout(
    run: Any,
) -> None:
    """The connect timeout covers AUTH and SELECT too, and a connection attempt that outlives
    its callers (they gave up sooner) leaves nothing for asyncio to report."""

    async def scenario() -> tuple[float, list[dict[str, Any]]]:
        reported: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reported.append(ctx))
        async with (
            silent_server() as port,
            _line(f"redis://:pw@127.0.0.1:{port}/3", socket_connect_timeout=0.3) as (line, _),
        ):
            started = time.perf_counter()
            with pytest.raises(TimeoutError):  # this caller gives up first
                async with asyncio.timeout(0.05):
                    await line.execute("PING")
            with pytest.raises(RedisConnectionError, match="could not connect"):
                await line.execute("PING")  # waits for the same attempt, which times out
            elapsed = time.perf_counter() - started
            await asyncio.sleep(0.05)
            gc.collect()
            await asyncio.sleep(0)
        return elapsed, reported

    elapsed, reported = run(scenario())
    assert elapsed < 1.0
    assert reported == []


def test_a_command_unanswered_within_the_timeout_fails_what_waits_behind_it_and_reconnects(
    run: Any,
) -> None:
    """BLPOP holds the connection past the line's deadline: it and the command queued behind
    it fail with TimeoutError at the deadline, and the next command gets a new connection."""

    async def scenario() -> tuple[list[BaseException | object], float, object, object, object]:
        async with _line(timeout_s=0.3) as (line, _):
            before = await line.execute("CLIENT", "ID")
            started = time.perf_counter()
            blocked = asyncio.ensure_future(line.execute("BLPOP", f"e-{uuid.uuid4().hex}", "3"))
            await asyncio.sleep(0.1)
            behind = asyncio.ensure_future(line.execute("ECHO", "behind"))
            failed = list(await asyncio.gather(blocked, behind, return_exceptions=True))
            elapsed = time.perf_counter() - started
            after = await line.execute("CLIENT", "ID")
            return failed, elapsed, before, after, await line.execute("ECHO", "again")

    failed, elapsed, before, after, again = run(scenario())
    assert [type(f) for f in failed] == [TimeoutError, TimeoutError]
    assert 0.25 < elapsed < 1.0
    assert after != before, "a stuck connection is not used again"
    assert again == b"again"


def test_each_command_has_its_whole_timeout_from_when_it_was_sent(run: Any) -> None:
    """The watchdog armed for a first, answered command does not cut short a later one: the
    BLPOP sent 0.3 s in has until 0.8 s, and answers (nil) at 0.7 s."""

    async def scenario() -> tuple[object, object]:
        async with _line(timeout_s=0.5) as (line, _):
            first = await line.execute("ECHO", "first")
            await asyncio.sleep(0.3)
            return first, await line.execute("BLPOP", f"e-{uuid.uuid4().hex}", "0.4")

    assert run(scenario()) == (b"first", None)


def test_connecting_is_bounded_by_the_line_timeout_too(run: Any) -> None:
    """A client without a connect timeout of its own: the line's timeout bounds the handshake
    with a server that never answers it."""

    async def scenario() -> float:
        async with (
            silent_server() as port,
            _line(f"redis://:pw@127.0.0.1:{port}/0", timeout_s=0.2) as (line, _),
        ):
            started = time.perf_counter()
            with pytest.raises(TimeoutError):
                await line.execute("PING")
            return time.perf_counter() - started

    assert run(scenario()) < 1.0
