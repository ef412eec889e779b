"""Streaming generation from Triton workers over gRPC (`tritonclient[grpc]`'s protocol stubs).

Each request goes to the healthy endpoint with the fewest outstanding requests. A failure
before the first token (connection refused, the version not loaded there, the worker
overloaded) is retried once on another endpoint; after the first token nothing is retried,
because the client already has part of the answer. Every request carries a deadline, and
cancelling the consuming task (the client went away) cancels the Triton request, which frees
its batch slot.

The requests travel on Triton's bidirectional `ModelStreamInfer` stream, and a stream is kept
open for the next request once one finishes cleanly, so a request costs one message each way
plus its responses, not a new HTTP/2 stream and its set-up on both sides. A request asks for
Triton's `triton_final_response` marker, which says without a doubt when a stream is free
again. A stream whose request failed, timed out or was abandoned is cancelled, never reused:
cancelling it is what cancels the request inside Triton.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.errors import GatewayError, InvalidInput, Unavailable, UpstreamTimeout
from gateway.server.background import Every
from gateway.triton.protocol import GenerateCall, Piece, infer_request, is_last, parse_response

log = logging.getLogger("tollgate.gateway.upstream")

_MAX_MESSAGE = 64 * 1024 * 1024
_RECONNECT_MS = 1000  # the longest wait between attempts to reach a server that is down


class _Retryable(Exception):
    """Failed before the first token in a way another endpoint may not."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


class _Stale(Exception):
    """A kept stream turned out to be closed before it carried the request."""


def _classify(message: str, status: str = "") -> GatewayError:
    if "DEADLINE_EXCEEDED" in status:
        return UpstreamTimeout("the model did not finish within the deadline")
    if message.startswith("overloaded"):
        return Unavailable(f"the model is {message}", retry_after_s=1.0, code="overloaded")
    if message.startswith("invalid request: ") or "INVALID_ARG" in status:
        return InvalidInput(message.removeprefix("invalid request: "), code="invalid_request")
    # What the worker or Triton said stays in the gateway's log: it may name internals.
    log.warning("the model worker failed: %s", message)
    return Unavailable("the model worker failed", retry_after_s=1.0)


class Endpoint:
    """One Triton server: its channel, its health, and the streams kept open to it."""

    def __init__(self, url: str, *, keep: int = 256) -> None:
        self.url = url
        self.channel = grpc.aio.insecure_channel(
            url,
            options=[
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                # While a server is down, gRPC tries to reconnect after a back-off that grows
                # to 2 minutes, and until it does every call fails at once: a worker back
                # after a 30 s restart was refused work for another 10 s. Capped, it is
                # reconnected within about a second of coming back.
                ("grpc.initial_reconnect_backoff_ms", _RECONNECT_MS // 4),
                ("grpc.max_reconnect_backoff_ms", _RECONNECT_MS),
            ],
        )
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.outstanding = 0
        self.healthy = True
        self.keep = keep
        self._idle: list[Any] = []

    async def close(self) -> None:
        self.forget_streams()
        await self.channel.close()

    def forget_streams(self) -> None:
        """Drop every kept stream (the server restarted, or is going away)."""
        for call in self._idle:
            call.cancel()
        self._idle.clear()

    async def server_live(self) -> bool:
        """Whether the server answers. (Not `ServerReady`: with strict readiness a server is
        "not ready" while any model loads, which is exactly when it must stay in use.)"""
        answer = await self.stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=2.0)
        return bool(answer.live)

    async def ready_versions(self, model: str) -> set[int]:
        """The versions of `model` this server has loaded and ready."""
        return (await self.ready_index()).get(model, set())

    async def ready_index(self, timeout_s: float = 5.0) -> dict[str, set[int]]:
        """Every model this server has loaded and ready, with its ready versions."""
        index = await self.stub.RepositoryIndex(
            service_pb2.RepositoryIndexRequest(ready=True), timeout=timeout_s
        )
        ready: dict[str, set[int]] = {}
        for m in index.models:
            if m.state == "READY" and m.version.isdigit():
                ready.setdefault(m.name, set()).add(int(m.version))
        return ready

    async def load_model(self, model: str, config_json: str, timeout_s: float) -> None:
        """Load (or reload) `model` with this configuration; Triton loads the versions it
        names that are not loaded, unloads the ones it no longer names once their requests
        have finished, and leaves the others serving."""
        request = service_pb2.RepositoryModelLoadRequest(model_name=model)
        request.parameters["config"].string_param = config_json
        await self.stub.RepositoryModelLoad(request, timeout=timeout_s)

    async def stream(
        self, request: service_pb2.ModelInferRequest, timeout_s: float
    ) -> AsyncIterator[service_pb2.ModelInferResponse]:
        """The responses to one request; raises `_ModelError`, `_Stale`, grpc errors, or
        `UpstreamTimeout` when `timeout_s` passes first."""
        deadline = _Deadline(timeout_s)
        call: Any = None
        clean = False
        try:
            call, response = await self._send(request, deadline)
            while True:
                if response.error_message:
                    raise _ModelError(response.error_message)
                last = is_last(response.infer_response)
                if response.infer_response.outputs or not last:  # not the bare end marker
                    yield response.infer_response
                if last:
                    clean = True
                    return
                if deadline.expired:  # it ran out while the caller held a response
                    raise UpstreamTimeout("the model did not finish within the deadline")
                deadline.waiting = True
                response = await call.read()
                deadline.waiting = False
                if response is grpc.aio.EOF:
                    raise _Stale
        except (asyncio.CancelledError, grpc.aio.AioRpcError, _Stale) as exc:
            if deadline.ended(exc):
                raise UpstreamTimeout("the model did not finish within the deadline") from None
            raise
        finally:
            deadline.cancel()
            if call is not None:
                if clean and len(self._idle) < self.keep:
                    self._idle.append(call)
                else:
                    call.cancel()

    async def _send(
        self, request: service_pb2.ModelInferRequest, deadline: _Deadline
    ) -> tuple[Any, service_pb2.ModelStreamInferResponse]:
        """Write the request on a kept stream (or, when none is open or the kept one turns
        out closed, a new one) and wait for its first response."""
        deadline.waiting = True
        while self._idle and self._idle[-1].done():  # ended while kept (the server went away)
            self._idle.pop()
        if self._idle:
            call = deadline.call = self._idle.pop()
            try:
                await call.write(request)
                first = await call.read()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):  # it ended meanwhile
                first = grpc.aio.EOF
            except BaseException:  # cancelled (the deadline, or the client went away)
                call.cancel()
                raise
            if first is not grpc.aio.EOF:
                deadline.waiting = False
                return call, first
            call.cancel()
            if deadline.expired:  # the deadline ended it, not a server restart
                raise _Stale
            # Closed while it was kept (a server restart): a new one.
        call = deadline.call = self.stub.ModelStreamInfer()
        try:
            await call.write(request)
            first = await call.read()
        except BaseException:
            call.cancel()
            raise
        finally:
            deadline.waiting = False
        if first is grpc.aio.EOF:
            call.cancel()
            raise _Stale
        return call, first


class _Deadline:
    """Cancels the current call (and so the Triton request) when the time is up.

    Cancelling the call is what frees the worker's slot. It does not always wake a coroutine
    awaiting that call's read or write (a call cancelled as it starts can leave the await
    pending), so when the time runs out during such an await (`waiting`) the task is
    cancelled too, and `ended` takes that cancellation back.
    """

    def __init__(self, timeout_s: float) -> None:
        self.call: Any = None
        self.expired = False
        self.waiting = False
        self._task = asyncio.current_task()
        self._cancelled_task = False
        self._timer = asyncio.get_running_loop().call_later(timeout_s, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self.call is not None:
            self.call.cancel()
        if self.waiting and self._task is not None:
            self._cancelled_task = True
            self._task.cancel()

    def ended(self, exc: BaseException) -> bool:
        """Whether this deadline is what ended the call with `exc`, so that the caller raises
        the timeout instead. A cancellation counts only if it came from the deadline alone,
        not from the task being cancelled (and the deadline's own is then taken back).
        Cancelling the call can also surface as any gRPC status (UNAVAILABLE while the
        channel still connects) or as a closed stream: after the deadline, that is the
        timeout, not a sign that the server is down."""
        if not isinstance(exc, asyncio.CancelledError):
            return self.expired
        if self._cancelled_task and self._task is not None:
            self._cancelled_task = False
            self._task.uncancel()
        return self.expired and not _cancelling()

    def cancel(self) -> None:
        self._timer.cancel()


class _ModelError(Exception):
    """The worker answered the request with an error."""


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class TritonPool:
    """Every configured Triton endpoint, its health, and the call itself."""

    def __init__(self, urls: list[str], *, timeout_s: float, health_interval_s: float) -> None:
        self.endpoints = [Endpoint(url) for url in urls]
        self.timeout_s = timeout_s
        self.health_interval_s = health_interval_s
        self._job = Every(
            health_interval_s, self.check_health, name="tollgate-triton-health", log=log
        )

    async def start(self) -> None:
        await self.check_health()
        self._job.start()

    async def stop(self) -> None:
        await self._job.stop()
        for endpoint in self.endpoints:
            await endpoint.close()

    async def check_health(self) -> None:
        async def one(endpoint: Endpoint) -> None:
            problem = "not live"
            try:
                healthy = await endpoint.server_live()
            except (grpc.aio.AioRpcError, TimeoutError, OSError) as exc:
                healthy, problem = False, str(exc)
            if not healthy:
                endpoint.forget_streams()  # a restarted server does not know them
            if healthy != endpoint.healthy:
                log.warning("Triton at %s is %s", endpoint.url, "back" if healthy else problem)
            endpoint.healthy = healthy

        await asyncio.gather(*(one(e) for e in self.endpoints))

    async def ready_models(self, timeout_s: float = 2.0) -> dict[str, set[int]]:
        """Every model version some healthy endpoint has ready: one repository index per
        endpoint, asked of all at once; an endpoint that does not answer within `timeout_s`
        adds nothing."""

        async def one(endpoint: Endpoint) -> dict[str, set[int]]:
            with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError, OSError):
                return await endpoint.ready_index(timeout_s)
            return {}

        held: dict[str, set[int]] = {}
        indexes = await asyncio.gather(*(one(e) for e in self.endpoints if e.healthy))
        for index in indexes:
            for model, versions in index.items():
                held.setdefault(model, set()).update(versions)
        return held

    def _pick(self, tried: set[str]) -> Endpoint | None:
        candidates = [e for e in self.endpoints if e.url not in tried and e.healthy]
        if not candidates:  # health checks lag: an endpoint marked down may be back
            candidates = [e for e in self.endpoints if e.url not in tried]
        return min(candidates, key=lambda e: e.outstanding, default=None)

    async def generate(self, call: GenerateCall) -> AsyncIterator[Piece]:
        """Stream the worker's responses; raise a GatewayError on failure."""
        tried: set[str] = set()
        last: GatewayError | None = None
        request = infer_request(call)
        while (endpoint := self._pick(tried)) is not None and len(tried) < 2:
            tried.add(endpoint.url)
            started = False
            endpoint.outstanding += 1
            try:
                async for piece in self._stream(endpoint, request):
                    started = True
                    yield piece
                return
            except _Retryable as exc:
                if started:
                    raise exc.error from exc
                last = exc.error
                log.warning("%s failed before the first token: %s", endpoint.url, exc.error)
            finally:
                endpoint.outstanding -= 1
        raise last or Unavailable("no Triton endpoint is configured")

    async def _stream(
        self, endpoint: Endpoint, request: service_pb2.ModelInferRequest
    ) -> AsyncIterator[Piece]:
        final = False
        try:
            async for response in endpoint.stream(request, self.timeout_s):
                piece = parse_response(response)
                final = final or piece.final
                yield piece
        except _ModelError as exc:
            error = _classify(str(exc))
            if isinstance(error, Unavailable):
                raise _Retryable(error) from exc
            raise error from exc
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
                endpoint.healthy = False
                endpoint.forget_streams()
                log.warning("Triton at %s is unreachable: %s", endpoint.url, exc.details())
                raise _Retryable(Unavailable("a model worker is unreachable")) from exc
            error = _classify(exc.details() or str(exc), exc.code().name)
            if isinstance(error, Unavailable):
                raise _Retryable(error) from exc
            raise error from exc
        except _Stale as exc:
            log.warning("Triton at %s closed the stream", endpoint.url)
            raise _Retryable(Unavailable("a model worker closed the stream")) from exc
        if not final:
            raise Unavailable("the worker's stream ended without a final response")
