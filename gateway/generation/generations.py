"""One generation, from an authenticated request to the worker's last response.

Each route makes one call here: `answer` (the whole text; from the response cache when the
route allows it), `answer_all` (several prompts in turn) or `stream` (the worker's responses as
they come). Inside, `admit` does everything that can refuse a request before any work is
done: the input filter, routing (which version, and its context limit), the key's state and
the rate limits (one request and `max_tokens` generated tokens reserved). `run` streams from
Triton, records metrics, and refunds the tokens that were reserved but not generated,
whatever happens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from gateway.config import GatewaySettings
from gateway.errors import GatewayError, ValidationFailed
from gateway.generation.cache import ResponseCache, cacheable
from gateway.generation.input_filter import InputFilter
from gateway.generation.ratelimit import Decision, Limits, RateLimiter
from gateway.generation.request import GenerateRequest
from gateway.generation.routing import RouteTable
from gateway.identity.api_keys import active_key
from gateway.identity.tokens import Identity
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.tracing import OffTracer, traceparent
from gateway.triton.pool import TritonPool
from gateway.triton.protocol import GenerateCall, Piece
from registry.db import RegistryDatabase

T = TypeVar("T")


class Watch(Protocol):
    """Wraps a generation's work (the route's disconnect watch)."""

    def __call__(self, work: Awaitable[T], /) -> Awaitable[T]: ...


class Outcomes(Protocol):
    """Where a finished generation's outcome goes for judging canaries (the canary gates)."""

    def record(
        self, model: str, version: int, *, failed: bool, ttft_s: float | None, itl_s: float | None
    ) -> None: ...


@dataclass
class Admitted:
    call: GenerateCall
    alias: str
    identity: Identity
    limits: Limits
    decision: Decision
    started: float


@dataclass(frozen=True)
class Answer:
    """A whole generation: what was called, the final outcome with all text and token ids,
    the rate-limit headers, and whether the response cache answered (hit) or was filled (miss)."""

    call: GenerateCall
    final: Piece
    headers: dict[str, str]
    cache: Literal["hit", "miss"] | None = None


@dataclass(frozen=True)
class Stream:
    """A streamed generation whose first response has arrived: what was called, the rate-limit
    headers, and the worker's responses from the first on."""

    call: GenerateCall
    headers: dict[str, str]
    pieces: AsyncIterator[Piece]


class Generations:
    def __init__(
        self,
        *,
        settings: GatewaySettings,
        db: RegistryDatabase,
        routes: RouteTable,
        pool: TritonPool,
        limiter: RateLimiter,
        metrics: Metrics,
        cache: ResponseCache | None = None,
        gates: Outcomes | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.settings, self.db, self.routes, self.pool = settings, db, routes, pool
        self.limiter, self.metrics, self.gates = limiter, metrics, gates
        self.cache = cache or ResponseCache(None, 0)
        self.tracer = tracer or OffTracer()
        self.filter = InputFilter(settings, metrics)
        self._key_limits: dict[str, Limits] = {}
        self.defaults = Limits(
            settings.rate_requests_capacity,
            settings.rate_requests_per_s,
            settings.rate_tokens_capacity,
            settings.rate_tokens_per_s,
        )

    async def answer(
        self,
        identity: Identity,
        body: GenerateRequest,
        request_id: str,
        *,
        cached: bool = False,
        watch: Watch | None = None,
    ) -> Answer:
        """The whole generation. With `cached`, a deterministic request is answered from the
        response cache when it holds the answer (its reserved tokens given back), else the
        answer is put there. `watch` wraps the work after admission (the route's disconnect
        watch: a client that leaves cancels its generation, never its admission)."""
        admitted = await self.admit(identity, body, request_id)
        work = self._answer(admitted, cached=cached)
        return await (watch(work) if watch is not None else work)

    async def _answer(self, admitted: Admitted, *, cached: bool) -> Answer:
        headers = admitted.decision.headers()
        if not (cached and self.cache.enabled and cacheable(admitted.call)):
            return Answer(admitted.call, await self.complete(admitted), headers)
        tenant = admitted.identity.bucket
        hit = await self.cache.get(admitted.call, tenant)
        if hit is not None:
            self.metrics.cache.labels("hit").inc()
            await self.release(admitted)
            return Answer(admitted.call, hit, headers, "hit")
        self.metrics.cache.labels("miss").inc()
        final = await self.complete(admitted)
        await self.cache.put(admitted.call, tenant, final)
        return Answer(admitted.call, final, headers, "miss")

    async def answer_all(
        self, identity: Identity, bodies: Sequence[GenerateRequest], request_id: str
    ) -> list[Answer]:
        """Each generation in turn, each admitted (and rate limited) on its own."""
        return [await self.answer(identity, body, request_id) for body in bodies]

    async def stream(self, identity: Identity, body: GenerateRequest, request_id: str) -> Stream:
        """The worker's responses, once the first has arrived: a refusal, or a failure before
        any text, is raised here, while the caller can still answer with a plain HTTP error."""
        admitted = await self.admit(identity, body, request_id)
        pieces = self.run(admitted)
        first = await anext(pieces)
        return Stream(admitted.call, admitted.decision.headers(), _resume(first, pieces))

    async def limits_for(self, identity: Identity) -> Limits:
        """The caller's bucket sizes; without Redis this also checks the key is not revoked
        (with Redis the admission script does, and `admit` asks the database when Redis fails
        and the in-process buckets decide)."""
        if not identity.key_id:
            return self.defaults
        cached = self._key_limits.get(identity.key_id)
        if cached is not None and self.limiter.redis is not None:
            return cached
        info = await active_key(db=self.db, key_id=identity.key_id)
        d, lim = self.defaults, info.limits
        limits = Limits(
            lim.requests_capacity or d.requests_capacity,
            lim.requests_per_s or d.requests_per_s,
            lim.tokens_capacity or d.tokens_capacity,
            lim.tokens_per_s or d.tokens_per_s,
        )
        self._key_limits[identity.key_id] = limits
        return limits

    async def admit(self, identity: Identity, body: GenerateRequest, request_id: str) -> Admitted:
        started = time.perf_counter()
        identity.require("generate")
        if body.version is not None:
            identity.require("admin")
        self.filter.check(body.prompt)
        model = body.model or self.settings.default_model
        with self.tracer.start_as_current_span("route") as span:
            version, context, alias = self.routes.resolve(model, identity.subject, body.version)
            span.set_attributes({"tollgate.model": model, "tollgate.version": version})
            span.set_attribute("tollgate.alias", alias)
        if context and body.max_tokens > context - 1:
            raise ValidationFailed(
                f"max_tokens must be between 1 and {context - 1} for {model}",
                code="max_tokens_out_of_range",
            )
        with self.tracer.start_as_current_span("rate_limit"):
            limits = await self.limits_for(identity)
            try:
                decision = await self.limiter.take(
                    identity.bucket, limits, body.max_tokens, identity.key_id
                )
            except GatewayError:
                self.metrics.rate_limited.inc()
                raise
            if decision.backend == "local" and identity.key_id and self.limiter.redis is not None:
                # Redis failed and the in-process buckets admitted: they know nothing of
                # revocations, which the admission script would have checked, so ask the
                # database (only while Redis is failing).
                await active_key(db=self.db, key_id=identity.key_id)
        self.metrics.overhead.labels("generate").observe(time.perf_counter() - started)
        self.metrics.prompt_chars.labels(model, str(version)).observe(len(body.prompt))
        call = GenerateCall(
            model=model,
            version=version,
            prompt=body.prompt,
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            seed=body.seed,
            stop=body.stops,
            stream=body.stream,
            request_id=request_id,
        )
        return Admitted(call, alias, identity, limits, decision, started)

    async def complete(self, admitted: Admitted) -> Piece:
        """The whole answer as one piece: all text and ids, and the final response's outcome."""
        text: list[str] = []
        ids: list[int] = []
        final = Piece("", [])
        async for piece in self.run(admitted):
            text.append(piece.text)
            ids += piece.token_ids
            final = piece
        return replace(final, text="".join(text), token_ids=ids)

    async def release(self, admitted: Admitted) -> None:
        """Give back every reserved token of a request that generated nothing (a cache hit)."""
        await self.limiter.refund(
            admitted.identity.bucket, admitted.limits, admitted.call.max_tokens, admitted.decision
        )

    async def run(self, admitted: Admitted) -> AsyncIterator[Piece]:
        """The worker's responses; metrics, the canary gates' sample and the token refund
        happen however it ends."""
        call, generated, outcome = admitted.call, 0, "error"
        labels = (call.model, str(call.version))
        first_at: float | None = None
        failed: bool | None = None  # None: not the worker's doing (the caller left, or erred)
        span = self.tracer.start_span(  # not "current": this generator may resume elsewhere
            "triton",
            attributes={
                "tollgate.model": call.model,
                "tollgate.version": call.version,
                "tollgate.stream": call.stream,
            },
        )
        if span.is_recording():
            call = replace(call, traceparent=traceparent(span))
        try:
            async for piece in self.pool.generate(call):
                if first_at is None and (piece.text or piece.final):
                    first_at = time.perf_counter()
                    if piece.final:  # all in one response: when did its first token come?
                        first_at -= _decoding_s(piece)
                    self.metrics.first_token.labels(*labels).observe(first_at - admitted.started)
                generated += len(piece.token_ids)
                if piece.final:
                    generated = piece.completion_tokens
                    outcome = piece.finish_reason or "ok"
                    failed = False
                    self.metrics.tokens.labels(call.model, "prompt").inc(piece.prompt_tokens)
                    self.metrics.tokens.labels(call.model, "completion").inc(generated)
                yield piece
        except asyncio.CancelledError:
            outcome = "disconnected"
            raise
        except GatewayError as exc:
            self.metrics.upstream_errors.labels(exc.code).inc()
            failed = exc.status >= 500
            span.set_status(StatusCode.ERROR, exc.code)
            raise
        finally:
            span.set_attributes({"tollgate.outcome": outcome, "tollgate.tokens": generated})
            span.end()
            self.metrics.generations.labels(*labels, admitted.alias, outcome).inc()
            self._sample(admitted, failed, first_at, generated)
            self.limiter.refund_soon(  # off the response's path: the caller need not wait
                admitted.identity.bucket,
                admitted.limits,
                call.max_tokens - generated,
                admitted.decision,
            )

    def _sample(
        self, admitted: Admitted, failed: bool | None, first_at: float | None, generated: int
    ) -> None:
        if failed is None:
            return
        call = admitted.call
        ttft = first_at - admitted.started if first_at is not None else None
        itl = None
        if first_at is not None and generated > 1:
            itl = (time.perf_counter() - first_at) / (generated - 1)
            self.metrics.inter_token.labels(call.model, str(call.version)).observe(itl)
        if self.gates is not None and admitted.alias in {"production", "canary"}:
            self.gates.record(call.model, call.version, failed=failed, ttft_s=ttft, itl_s=itl)


def _decoding_s(final: Piece) -> float:
    """How long the worker decoded after the first token, from its timings.

    A request answered in one response (not streamed, or finished at once) shows its first
    token only with the last one; without this, its time to first token would be its whole
    time and its inter-token latency nil, and the canary gates, comparing medians, would
    judge the mix of streamed and plain requests each side happened to get."""
    timings = final.timings or {}
    first, total = timings.get("first_token_ms"), timings.get("total_ms")
    if first is None or total is None:
        return 0.0
    return max(0.0, (total - first) / 1000)


async def _resume(first: Piece, rest: AsyncIterator[Piece]) -> AsyncIterator[Piece]:
    try:
        yield first
        async for piece in rest:
            yield piece
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
