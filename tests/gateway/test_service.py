"""What a generation leaves for the canary gates and the latency metrics, through fakes at the
worker seam: a request answered in one response gets its first token's time from the worker's
timings, not the time of its last token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from gateway.config import GatewaySettings
from gateway.generation.generations import Admitted, Generations
from gateway.generation.ratelimit import RateLimiter
from gateway.identity.tokens import Identity
from gateway.telemetry.metrics import Metrics
from gateway.triton.protocol import GenerateCall, Piece


class _Pool:
    """A worker that takes `delay_s` and answers with the given responses."""

    def __init__(self, pieces: list[Piece], delay_s: float) -> None:
        self.pieces, self.delay_s = pieces, delay_s

    async def generate(self, call: GenerateCall) -> AsyncIterator[Piece]:
        for piece in self.pieces:
            await asyncio.sleep(self.delay_s / len(self.pieces))
            yield piece


class _Gates:
    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []

    def record(self, model: str, version: int, **sample: Any) -> None:
        self.samples.append(sample)


def _generate(pieces: list[Piece], delay_s: float, *, stream: bool) -> tuple[dict[str, Any], float]:
    """Run one generation; the gate's sample and the request's whole time."""
    gates = _Gates()
    metrics = Metrics()
    limiter = RateLimiter(redis=None, fail_open=True, timeout_s=1.0)
    generations = Generations(
        settings=GatewaySettings(),
        db=None,  # type: ignore[arg-type]  # not used by a run
        routes=None,  # type: ignore[arg-type]
        pool=_Pool(pieces, delay_s),  # type: ignore[arg-type]
        limiter=limiter,
        metrics=metrics,
        gates=gates,
    )
    identity = Identity(subject="someone", scopes=frozenset({"generate"}))
    call = GenerateCall(model="gen", version=1, prompt="x", max_tokens=11, stream=stream)

    async def main() -> float:
        decision = await limiter.take(identity.bucket, generations.defaults, 11, "")
        started = time.perf_counter()
        admitted = Admitted(call, "production", identity, generations.defaults, decision, started)
        async for _ in generations.run(admitted):
            pass
        return time.perf_counter() - started

    whole = asyncio.run(main())
    (sample,) = gates.samples
    return sample, whole


def _final(text: str, first_ms: float, total_ms: float) -> Piece:
    return Piece(
        text=text,
        token_ids=list(range(len(text))),
        final=True,
        finish_reason="length",
        completion_tokens=11,
        timings={"queue_ms": 1.0, "first_token_ms": first_ms, "total_ms": total_ms},
    )


def test_a_request_answered_in_one_response_takes_its_first_token_time_from_the_worker() -> None:
    # The worker says: first token 20 ms in, done 220 ms in (10 tokens after the first). Its
    # one response arrives 250 ms in (or later, on a busy machine).
    sample, whole = _generate([_final("a" * 11, 20.0, 220.0)], 0.25, stream=False)
    assert sample["failed"] is False
    assert 0.25 - 0.2 - 0.001 <= sample["ttft_s"] <= whole - 0.2, "200 ms before the response"
    # 0.2 s over the 10 tokens after the first (more only if the machine stalled in between).
    assert 0.02 <= sample["itl_s"] < 0.025


def test_a_stream_takes_its_first_token_time_from_its_first_response() -> None:
    # Two responses, 150 ms apart: the first token is the first response's.
    first = Piece(text="a", token_ids=[1])
    sample, whole = _generate([first, _final("b" * 10, 20.0, 220.0)], 0.3, stream=True)
    assert 0.15 - 0.001 <= sample["ttft_s"] <= whole - 0.15
    assert (0.15 - 0.001) / 10 <= sample["itl_s"] <= (whole - sample["ttft_s"]) / 10
