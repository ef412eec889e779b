"""Token buckets: the arithmetic on a fake clock, and the atomic Redis script on real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from redis.asyncio import Redis
from redis.credentials import UsernamePasswordCredentialProvider

from gateway.errors import Unauthorized, Unavailable
from gateway.generation.ratelimit import (
    REFUND_WINDOW_S,
    REVOKED_SET,
    Limits,
    LocalBuckets,
    RateLimiter,
    RateLimitExceeded,
)
from tests.services import REDIS_URL, silent_server

LIMITS = Limits(requests_capacity=3, requests_per_s=1.0, tokens_capacity=100, tokens_per_s=10.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_run_out_then_refill_with_time() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    assert [buckets.take("a", LIMITS, 1).allowed for _ in range(4)] == [True] * 3 + [False]
    denied = buckets.take("a", LIMITS, 1)
    assert denied.retry_after_s == pytest.approx(1.0)
    clock.now += 1.0
    assert buckets.take("a", LIMITS, 1).allowed
    assert not buckets.take("a", LIMITS, 1).allowed
    assert buckets.take("b", LIMITS, 1).allowed, "each caller has its own buckets"


def test_tokens_are_reserved_up_front_and_refunded() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    first = buckets.take("a", LIMITS, 80)
    assert first.allowed
    assert first.tokens_left == 20
    refused = buckets.take("a", LIMITS, 30)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(1.0)  # 10 more tokens at 10/s
    buckets.refund("a", LIMITS, 60)  # the first request generated only 20 tokens
    assert buckets.take("a", LIMITS, 30).allowed


def test_headers_describe_the_buckets() -> None:
    decision = LocalBuckets(Clock()).take("a", LIMITS, 40)
    headers = decision.headers()
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "2"
    assert headers["x-ratelimit-remaining-tokens"] == "60"
    assert headers["x-ratelimit-reset-tokens"] == "4.000s"
    assert headers["RateLimit-Policy"] == '"requests";q=3;w=3, "tokens";q=100;w=10'
    assert headers["RateLimit"] == '"requests";r=2;t=1, "tokens";r=60;t=4'


@pytest.mark.redis
def test_redis_admits_exactly_the_capacity_under_concurrency() -> None:
    limits = Limits(
        requests_capacity=20, requests_per_s=0.001, tokens_capacity=10**6, tokens_per_s=1
    )
    bucket = f"test-{uuid.uuid4().hex}"

    refusals: list[dict[str, str]] = []

    async def scenario() -> list[bool]:
        redis = Redis.from_url(REDIS_URL)
        limiter = RateLimiter(redis=redis)

        async def one() -> bool:
            try:
                decision = await limiter.take(bucket, limits, 5)
            except RateLimitExceeded as exc:
                refusals.append(exc.headers)
                return False
            # Decided by Redis, not by the in-process buckets a failing Redis falls back to.
            assert decision.backend == "redis"
            return True

        try:
            return await asyncio.gather(*(one() for _ in range(60)))
        finally:
            await limiter.close()
            await redis.aclose()

    assert sum(asyncio.run(scenario())) == 20
    assert len(refusals) == 40
    assert all(h["Retry-After"] and h["x-ratelimit-remaining-requests"] == "0" for h in refusals)


@pytest.mark.redis
def test_redis_refuses_revoked_keys_in_the_same_call() -> None:
    key_id = uuid.uuid4().hex[:16]

    async def scenario() -> None:
        redis = Redis.from_url(REDIS_URL)
        limiter = RateLimiter(redis=redis)
        try:
            await limiter.take(f"key:{key_id}", LIMITS, 1, key_id)
            await redis.sadd(REVOKED_SET, key_id)
            with pytest.raises(Unauthorized, match="revoked"):
                await limiter.take(f"key:{key_id}", LIMITS, 1, key_id)
        finally:
            await redis.srem(REVOKED_SET, key_id)
            await limiter.close()
            await redis.aclose()

    asyncio.run(scenario())


def test_when_redis_fails_limits_fail_open_to_local_buckets_or_closed() -> None:
    errors: list[int] = []

    async def scenario(fail_open: bool) -> str:
        redis = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.5)
        limiter = RateLimiter(
            redis=redis, fail_open=fail_open, on_redis_error=lambda: errors.append(1)
        )
        try:
            return (await limiter.take("a", LIMITS, 1)).backend
        finally:
            await limiter.close()
            await redis.aclose()

    assert asyncio.run(scenario(fail_open=True)) == "local"
    with pytest.raises(Unavailable, match="rate limiting is unavailable"):
        asyncio.run(scenario(fail_open=False))
    assert len(errors) == 2, "each failure is counted"


@pytest.mark.redis
def test_redis_refunds_wait_briefly_then_go_together_and_close_sends_the_rest() -> None:
    limits = Limits(
        requests_capacity=100, requests_per_s=1, tokens_capacity=100, tokens_per_s=0.001
    )
    buckets = [f"test-{uuid.uuid4().hex}" for _ in range(3)]

    async def tokens_left(limiter: RateLimiter, bucket: str) -> float:
        return (await limiter.take(bucket, limits, 0)).tokens_left

    async def scenario() -> None:
        redis = Redis.from_url(REDIS_URL)
        limiter = RateLimiter(redis=redis)
        try:
            decisions = [await limiter.take(b, limits, 80) for b in buckets]
            for bucket, decision in zip(buckets, decisions, strict=True):
                limiter.refund_soon(bucket, limits, 30, decision)
                limiter.refund_soon(bucket, limits, 30, decision)
            # Not yet: they wait for the window, then go together in one script call.
            assert await tokens_left(limiter, buckets[0]) == pytest.approx(20, abs=0.1)
            await asyncio.sleep(REFUND_WINDOW_S * 5)
            for bucket in buckets:
                assert await tokens_left(limiter, bucket) == pytest.approx(80, abs=0.1)
            # Refunds still waiting when the gateway stops are sent, not dropped.
            limiter.refund_soon(buckets[0], limits, 15, decisions[0])
            await limiter.close()
            assert await tokens_left(limiter, buckets[0]) == pytest.approx(95, abs=0.1)
        finally:
            await limiter.close()
            await redis.aclose()

    asyncio.run(scenario())


@pytest.mark.redis
def test_refunds_still_arrive_after_redis_forgot_its_scripts() -> None:
    """A restarted or failed-over Redis has an empty script cache; refunds load theirs again."""
    limits = Limits(
        requests_capacity=100, requests_per_s=1, tokens_capacity=100, tokens_per_s=0.001
    )
    bucket = f"test-{uuid.uuid4().hex}"

    async def scenario() -> float:
        redis = Redis.from_url(REDIS_URL)
        limiter = RateLimiter(redis=redis)
        try:
            decision = await limiter.take(bucket, limits, 70)
            await redis.script_flush()
            limiter.refund_soon(bucket, limits, 50, decision)
            await limiter.close()
            return (await limiter.take(bucket, limits, 0)).tokens_left
        finally:
            await limiter.close()
            await redis.aclose()

    assert asyncio.run(scenario()) == pytest.approx(80, abs=0.1)


def test_a_redis_that_stops_answering_counts_as_failed_within_the_timeout() -> None:
    """A Redis that accepts connections and then says nothing (a hung server, a black-holed
    network) must not hang requests: after `timeout_s` the limiter falls back or refuses."""

    async def scenario(fail_open: bool) -> tuple[str, float]:
        async with silent_server() as port:
            redis = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=None)
            limiter = RateLimiter(redis=redis, fail_open=fail_open, timeout_s=0.2)
            started = time.perf_counter()
            try:
                backend = (await limiter.take("a", LIMITS, 1)).backend
            finally:
                elapsed = time.perf_counter() - started
                await limiter.close()
                await redis.aclose()
        return backend, elapsed

    backend, elapsed = asyncio.run(scenario(fail_open=True))
    assert backend == "local"
    assert elapsed < 2
    started = time.perf_counter()
    with pytest.raises(Unavailable):
        asyncio.run(scenario(fail_open=False))
    assert time.perf_counter() - started < 2


@pytest.mark.redis
def test_a_client_a_line_cannot_follow_still_admits_and_refunds_through_redis_py() -> None:
    """A credential provider is asked for the password on each connection, which a pipelined
    line does not do; such a client keeps redis-py's own script calls."""
    limits = Limits(
        requests_capacity=100, requests_per_s=1, tokens_capacity=100, tokens_per_s=0.001
    )
    bucket = f"test-{uuid.uuid4().hex}"

    async def scenario() -> tuple[bool, float]:
        # The default user has no password here, so any password is accepted.
        provider = UsernamePasswordCredentialProvider("default", "any")
        redis = Redis.from_url(REDIS_URL, credential_provider=provider)
        limiter = RateLimiter(redis=redis)
        try:
            decision = await limiter.take(bucket, limits, 70)
            limiter.refund_soon(bucket, limits, 50, decision)
            await limiter.flush()
            return limiter._line is None, (await limiter.take(bucket, limits, 0)).tokens_left
        finally:
            await limiter.close()
            await redis.aclose()

    through_redis_py, tokens_left = asyncio.run(scenario())
    assert through_redis_py
    assert tokens_left == pytest.approx(80, abs=0.1)
