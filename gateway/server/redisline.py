"""One pipelined Redis connection for the gateway's rate-limit scripts (admission, refunds).

redis-py's asyncio client takes a connection from its pool for every command, behind a lock,
packs the arguments in Python and waits for the answer before the connection goes back; each
admission cost the gateway about 37 µs of client CPU that way, against 7 to 13 µs on a line
(`python -m bench.redisline`; end to end about 0.05 ms of the gateway's CPU per request, the
figures in docs/architecture.md). A `RedisLine` keeps one connection and writes each command as
soon as it is asked for, without waiting for the answers to the ones before it (Redis answers in
order): hiredis packs the command and parses the replies, in C, and an answer is handed to its
caller's future as it arrives. Concurrent requests therefore share one connection and, under
load, its reads and writes. Everything else the gateway asks of Redis (revocations, the cache,
the routing notices) still goes through redis-py, as do the scripts when a line cannot follow
the client's settings (a credential provider).

The connection is made from the redis-py client's own settings (host and port or Unix
socket, TLS context, user name, password, database), on first use and again after it is
lost. A caller that gives up on its answer (it was cancelled) does not disturb the order: its
answer is read and dropped when it comes.

Every command has a deadline, `timeout_s` after it was written. Instead of a timer per
command (an `asyncio.timeout` around each call cost more than the rest of the call's Python),
one timer watches the oldest unanswered command: replies come in order, so when that one is
overdue the connection is stuck, everything waiting on it fails with `TimeoutError`, and the
next command opens a new connection. Connecting, the handshake included, has the same bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import (
    AbstractConnection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError, ResponseError

Arg = str | int | float | bytes


def _pack(command: tuple[Arg, ...]) -> bytes:
    # hiredis's stub types the command as a one-element tuple; it takes any number.
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout_s: float | None = None) -> None:
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        # Each unanswered command: its caller's future and its deadline (loop time).
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.timeout_s = timeout_s
        self.transport: Any = None  # uvloop's transports do not subclass asyncio's
        self.loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self.waiting:  # nothing asked for this: the stream is out of step
                self.abort(InvalidResponse("Redis sent a reply nobody asked for"))
                return
            future, _ = self.waiting.popleft()
            if future.done():  # its caller gave up; the order holds
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_waiting(RedisConnectionError(f"lost the connection to Redis: {exc or 'closed'}"))
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if not self.lost.done():
            self.lost.set_result(None)

    def abort(self, exc: Exception) -> None:
        """Fail what waits with `exc` and close the connection; nothing more is sent on it."""
        self._fail_waiting(exc)
        if self.transport is not None:
            self.transport.close()

    def _fail_waiting(self, exc: Exception) -> None:
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        assert self.transport is not None
        future: asyncio.Future[Any] = self.loop.create_future()
        if self.timeout_s is None:
            self.waiting.append((future, 0.0))
        else:
            deadline = self.loop.time() + self.timeout_s
            self.waiting.append((future, deadline))
            if self._watchdog is None:
                self._watchdog = self.loop.call_at(deadline, self._check)
        self.transport.write(command)
        return future

    def _check(self) -> None:
        """The watchdog: fail the connection if its oldest unanswered command is overdue,
        else wake again at that command's deadline."""
        self._watchdog = None
        if not self.waiting:
            return
        deadline = self.waiting[0][1]
        if self.loop.time() >= deadline:
            self.abort(TimeoutError(f"Redis did not answer within {self.timeout_s} s"))
        else:
            self._watchdog = self.loop.call_at(deadline, self._check)


class RedisLine:
    """Pipelined commands on one connection, configured like `client`'s connections."""

    def __init__(self, settings: AbstractConnection, timeout_s: float | None = None) -> None:
        self._settings = settings
        self.timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    @classmethod
    def for_client(cls, client: Redis, timeout_s: float | None = None) -> RedisLine | None:
        """A line to where `client` connects, each command (and connecting) bounded by
        `timeout_s`; None when `client`'s settings are ones a line cannot follow (a credential
        provider, which redis-py asks for the password on each connection)."""
        # An unconnected connection object carries the client's settings, parsed from its URL.
        settings = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        if getattr(settings, "credential_provider", None) is not None:
            return None
        return cls(settings, timeout_s)

    async def execute(self, *args: Arg) -> Any:
        """Send one command; its reply, or `ResponseError` for an error reply, or a
        `redis.exceptions.ConnectionError` when the connection fails first, or `TimeoutError`
        when Redis does not answer (or the connection is not made) within `timeout_s`."""
        protocol = self._protocol
        if protocol is None or protocol.transport.is_closing():
            async with asyncio.timeout(self.timeout_s):
                protocol = await self._connect()
        return await protocol.send(_pack(args))

    async def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run `script` by its digest, sending its source once when Redis does not have it
        (after a restart or `SCRIPT FLUSH`)."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def close(self) -> None:
        connecting = self._connecting
        if connecting is not None and not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await connecting
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            await protocol.lost

    async def _connect(self) -> _Protocol:
        # Callers arriving while a connection is being made wait for that one; the attempt is
        # shielded, so one caller's timeout does not cancel it for the others.
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._open())
            # Its failure reaches whoever still waits; with nobody left (they timed out) it is
            # retrieved here, so asyncio does not report it as never retrieved.
            self._connecting.add_done_callback(_retrieve)
        protocol = await asyncio.shield(self._connecting)
        self._protocol = protocol
        return protocol

    async def _open(self) -> _Protocol:
        s: Any = self._settings
        loop = asyncio.get_running_loop()
        try:
            # The connection and its handshake together, within the connect timeout: a server
            # that accepts and then says nothing must not hold every later caller.
            async with asyncio.timeout(s.socket_connect_timeout):
                made = functools.partial(_Protocol, self.timeout_s)
                if isinstance(s, UnixDomainSocketConnection):
                    _, protocol = await loop.create_unix_connection(made, s.path)
                else:
                    ssl = s.ssl_context.get() if isinstance(s, SSLConnection) else None
                    _, protocol = await loop.create_connection(
                        made, s.host, s.port, ssl=ssl, server_hostname=s.host if ssl else None
                    )
                try:
                    await self._handshake(protocol)
                except BaseException:
                    protocol.transport.close()
                    raise
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"could not connect to Redis: {exc or 'timed out'}") from exc
        return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        s: Any = self._settings
        if s.password is not None:
            auth: tuple[str, ...] = (
                ("AUTH", s.username, s.password) if s.username else ("AUTH", s.password)
            )
            await protocol.send(_pack(auth))
        if s.db:
            await protocol.send(_pack(("SELECT", int(s.db))))


def _retrieve(task: asyncio.Task[_Protocol]) -> None:
    if not task.cancelled():
        task.exception()


class Script:
    """A Lua script and its SHA-1 digest, the name `EVALSHA` knows it by."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
