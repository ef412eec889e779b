"""Streaming generation from Triton workers over gRPC (`tritonclient.grpc.aio`).

Each request goes to the healthy endpoint with the fewest outstanding requests. A failure
before the first token (connection refused, the version not loaded there, the worker
overloaded) is retried once on another endpoint; after the first token nothing is retried,
because the client already has part of the answer. Every request carries a deadline, and
cancelling the consuming task (the client went away) cancels the Triton request, which frees
its batch slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from gateway.errors import GatewayError, InvalidInput, Unavailable, UpstreamTimeout

log = logging.getLogger("tollgate.gateway.upstream")


@dataclass(frozen=True)
class GenerateCall:
    model: str
    version: int
    prompt: str
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = True
    request_id: str = ""


@dataclass
class Piece:
    """One response from the worker: text and ids; the final one also the outcome."""

    text: str
    token_ids: list[int]
    final: bool = False
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Endpoint:
    url: str
    client: InferenceServerClient
    outstanding: int = 0
    healthy: bool = True


def infer_inputs(call: GenerateCall) -> list[grpcclient.InferInput]:
    """The generate model's input tensors for a call."""
    values: list[tuple[str, str, Any]] = [
        ("text_input", "BYTES", np.array([call.prompt.encode()], dtype=np.object_)),
        ("max_tokens", "INT32", np.array([call.max_tokens], dtype=np.int32)),
        ("temperature", "FP32", np.array([call.temperature], dtype=np.float32)),
        ("top_p", "FP32", np.array([call.top_p], dtype=np.float32)),
        ("top_k", "INT32", np.array([call.top_k], dtype=np.int32)),
        ("stream", "BOOL", np.array([call.stream], dtype=np.bool_)),
    ]
    if call.seed is not None:
        values.append(("seed", "UINT64", np.array([call.seed], dtype=np.uint64)))
    if call.stop:
        values.append(("stop", "BYTES", np.array([s.encode() for s in call.stop], np.object_)))
    tensors = []
    for name, datatype, array in values:
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def _piece(result: Any) -> Piece:
    text = result.as_numpy("text_output")
    ids = result.as_numpy("token_ids")
    piece = Piece(
        text=text[0].decode("utf-8") if text is not None and len(text) else "",
        token_ids=ids.tolist() if ids is not None else [],
    )
    reason = result.as_numpy("finish_reason")
    if reason is not None:  # only the final response carries the outcome
        piece.final, piece.finish_reason = True, reason[0].decode()
        piece.prompt_tokens = int(result.as_numpy("prompt_tokens")[0])
        piece.completion_tokens = int(result.as_numpy("completion_tokens")[0])
        piece.timings = {
            name: float(result.as_numpy(name)[0])
            for name in ("queue_ms", "first_token_ms", "total_ms")
        }
    return piece


class _Retryable(Exception):
    """Failed before the first token in a way another endpoint may not."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


def _classify(exc: InferenceServerException) -> GatewayError:
    status, message = str(exc.status() or ""), str(exc.message() or exc)
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message:
        return UpstreamTimeout("the model did not finish within the deadline")
    if message.startswith("overloaded"):
        return Unavailable(f"the model is {message}", retry_after_s=1.0, code="overloaded")
    if "INVALID_ARG" in status or "INVALID_ARGUMENT" in status:
        return InvalidInput(message, code="invalid_request")
    return Unavailable(f"the model worker failed: {message}", retry_after_s=1.0)


class TritonPool:
    """Clients for every configured Triton endpoint, their health, and the call itself."""

    def __init__(self, urls: list[str], *, timeout_s: float, health_interval_s: float) -> None:
        self.endpoints = [Endpoint(url, InferenceServerClient(url)) for url in urls]
        self.timeout_s = timeout_s
        self.health_interval_s = health_interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.check_health()
        self._task = asyncio.create_task(self._watch(), name="tollgate-triton-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for endpoint in self.endpoints:
            await endpoint.client.close()

    async def check_health(self) -> None:
        async def one(endpoint: Endpoint) -> None:
            try:
                endpoint.healthy = bool(
                    await asyncio.wait_for(endpoint.client.is_server_ready(), 2.0)
                )
            except (InferenceServerException, TimeoutError, OSError):
                endpoint.healthy = False

        await asyncio.gather(*(one(e) for e in self.endpoints))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            await self.check_health()

    async def model_ready(self, model: str, version: int) -> bool:
        """Whether at least one healthy endpoint has this version ready."""
        for endpoint in self.endpoints:
            if not endpoint.healthy:
                continue
            with contextlib.suppress(InferenceServerException, TimeoutError, OSError):
                ready = endpoint.client.is_model_ready(model, str(version))
                if await asyncio.wait_for(ready, 2.0):
                    return True
        return False

    def _pick(self, tried: set[str]) -> Endpoint | None:
        candidates = [e for e in self.endpoints if e.url not in tried and e.healthy]
        if not candidates:  # health checks lag: an endpoint marked down may be back
            candidates = [e for e in self.endpoints if e.url not in tried]
        return min(candidates, key=lambda e: e.outstanding, default=None)

    async def generate(self, call: GenerateCall) -> AsyncIterator[Piece]:
        """Stream the worker's responses; raise a GatewayError on failure."""
        tried: set[str] = set()
        last: GatewayError = Unavailable("no Triton endpoint is configured")
        while (endpoint := self._pick(tried)) is not None and len(tried) < 2:
            tried.add(endpoint.url)
            started = False
            endpoint.outstanding += 1
            try:
                async for piece in self._stream(endpoint, call):
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
        raise last

    async def _stream(self, endpoint: Endpoint, call: GenerateCall) -> AsyncIterator[Piece]:
        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {
                "model_name": call.model,
                "model_version": str(call.version),
                "inputs": infer_inputs(call),
                "request_id": call.request_id,
            }

        try:
            responses = endpoint.client.stream_infer(
                inputs_iterator=requests(), stream_timeout=self.timeout_s
            )
            async for result, error in responses:
                if error is not None:
                    raise error
                piece = _piece(result)
                yield piece
                if piece.final:
                    return
        except InferenceServerException as exc:
            error = _classify(exc)
            if isinstance(error, Unavailable):
                raise _Retryable(error) from exc
            raise error from exc
        except OSError as exc:
            endpoint.healthy = False
            raise _Retryable(Unavailable(f"Triton at {endpoint.url} is unreachable")) from exc
        raise Unavailable("the worker's stream ended without a final response")
