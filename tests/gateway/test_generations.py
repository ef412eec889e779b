"""The one call a route makes (`Generations.answer`), with fakes for the route table and the
worker: the response cache on real Redis (a hit answers without the worker and gives the
reserved tokens back; a miss asks the worker and fills the cache), and revocation while Redis
is down, on a real registry database."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.config import GatewaySettings
from gateway.errors import Unauthorized
from gateway.generation.cache import ResponseCache, cache_key
from gateway.generation.generations import Answer, Generations
from gateway.generation.ratelimit import RateLimiter
from gateway.generation.request import GenerateRequest
from gateway.identity.api_keys import create_key, revoke_key
from gateway.identity.tokens import Identity
from gateway.telemetry.metrics import Metrics
from gateway.triton.protocol import GenerateCall, Piece
from registry import migrate
from registry.config import RegistrySettings
from registry.db import connect
from tests.services import REDIS_URL

pytestmark = pytest.mark.redis


class _Routes:
    def resolve(self, model: str, caller: str, pinned: int | None = None) -> tuple[int, int, str]:
        return 3, 256, "production"


class _Pool:
    def __init__(self) -> None:
        self.calls: list[GenerateCall] = []

    async def generate(self, call: GenerateCall) -> AsyncIterator[Piece]:
        self.calls.append(call)
        yield Piece(text="def ", token_ids=[1])
        yield Piece(
            text="f():",
            token_ids=[2, 3],
            final=True,
            finish_reason="length",
            prompt_tokens=4,
            completion_tokens=3,
        )


def _final(piece: Piece) -> tuple[str, str, int, int]:
    return piece.text, piece.finish_reason, piece.prompt_tokens, piece.completion_tokens


def test_a_hit_skips_the_worker_and_gives_the_reserved_tokens_back() -> None:
    async def main() -> None:
        redis = Redis.from_url(REDIS_URL)
        pool = _Pool()
        limiter = RateLimiter(redis=None, fail_open=True, timeout_s=1.0)
        generations = Generations(
            # Tokens refill slowly enough that only a refund can bring them back.
            settings=GatewaySettings(rate_tokens_capacity=100, rate_tokens_per_s=0.001),
            db=None,  # type: ignore[arg-type]  # no API key: never read
            routes=_Routes(),  # type: ignore[arg-type]
            pool=pool,  # type: ignore[arg-type]
            limiter=limiter,
            metrics=Metrics(),
            cache=ResponseCache(redis, ttl_s=60),
        )
        caller = Identity(subject=f"cache-{uuid.uuid4()}", scopes=frozenset({"generate"}))
        greedy = GenerateRequest(prompt=f"p-{uuid.uuid4()}", max_tokens=10, temperature=0)
        try:
            miss = await generations.answer(caller, greedy, "r1", cached=True)
            assert (miss.cache, _final(miss.final)) == ("miss", ("def f():", "length", 4, 3))
            assert len(pool.calls) == 1
            await asyncio.sleep(0.05)  # the miss's refund of 7 unused tokens is sent soon
            before = limiter.local.take(caller.bucket, generations.defaults, 0).tokens_left
            hit = await generations.answer(caller, greedy, "r2", cached=True)
            assert (hit.cache, _final(hit.final)) == ("hit", ("def f():", "length", 4, 3))
            assert len(pool.calls) == 1, "a hit does not reach the worker"
            # Another caller asking the same is not told what this one asked.
            other = Identity(subject=f"cache-{uuid.uuid4()}", scopes=frozenset({"generate"}))
            assert (await generations.answer(other, greedy, "r5", cached=True)).cache == "miss"
            assert len(pool.calls) == 2
            after = limiter.local.take(caller.bucket, generations.defaults, 0).tokens_left
            assert after == pytest.approx(before, abs=1.0), "the hit's 10 tokens came back"
            # Sampled without a seed: never from the cache; a route that does not ask: neither.
            sampled = GenerateRequest(prompt=greedy.prompt, max_tokens=10, temperature=0.7)
            assert (await generations.answer(caller, sampled, "r3", cached=True)).cache is None
            assert (await generations.answer(caller, greedy, "r4")).cache is None
            assert len(pool.calls) == 4
        finally:
            await redis.aclose()

    asyncio.run(main())


def test_an_answer_is_kept_as_the_v1_body_it_was_first_given_as() -> None:
    """Replicas of different releases share the cache during a rolling upgrade."""

    async def main() -> None:
        redis = Redis.from_url(REDIS_URL)
        cache = ResponseCache(redis, ttl_s=60)
        call = GenerateCall(
            model="gen", version=2, prompt=str(uuid.uuid4()), max_tokens=5, temperature=0,
            stream=False, request_id="first",
        )  # fmt: skip
        final = Piece("abc", [1], True, "eos", prompt_tokens=2, completion_tokens=1)
        try:
            await cache.put(call, "key:k1", final)
            kept = await redis.get(cache_key(call, "key:k1"))
            assert kept is not None
            assert json.loads(kept) == {
                "id": "first",
                "model": "gen",
                "version": 2,
                "completion": "abc",
                "finish_reason": "eos",
                "usage": {"prompt_tokens": 2, "completion_tokens": 1},
            }
            got = await cache.get(call, "key:k1")
            assert got is not None
            assert _final(got) == ("abc", "eos", 2, 1)
            assert await cache.get(call, "key:k2") is None
        finally:
            await redis.aclose()

    asyncio.run(main())


def test_while_redis_is_down_the_fallback_buckets_still_refuse_a_revoked_key(
    tmp_path: Path,
) -> None:
    """Fail-open admits on in-process buckets, which know no revocations; the database does."""
    db = connect(RegistrySettings(var_dir=tmp_path, database_url=""))
    migrate.upgrade(db)
    _, kept = create_key(db=db, name="kept", scopes="generate", actor="test")
    _, gone = create_key(db=db, name="gone", scopes="generate", actor="test")

    async def main() -> tuple[Answer, str]:
        redis = Redis.from_url("redis://127.0.0.1:9/0")  # nothing answers: Redis is down
        limiter = RateLimiter(redis=redis, fail_open=True, timeout_s=0.5)
        generations = Generations(
            settings=GatewaySettings(),
            db=db,
            routes=_Routes(),  # type: ignore[arg-type]
            pool=_Pool(),  # type: ignore[arg-type]
            limiter=limiter,
            metrics=Metrics(),
        )
        body = GenerateRequest(prompt="x", max_tokens=5)
        try:
            for key in (kept, gone):  # limits read (and cached) while both were active
                caller = Identity(subject="k", scopes=frozenset({"generate"}), key_id=key.key_id)
                await generations.answer(caller, body, "r0")
            revoke_key(db=db, key_id=gone.key_id, actor="test")
            caller = Identity(subject="k", scopes=frozenset({"generate"}), key_id=kept.key_id)
            served = await generations.answer(caller, body, "r1")
            assert served.headers  # decided by the in-process buckets
            refused = Identity(subject="k", scopes=frozenset({"generate"}), key_id=gone.key_id)
            with pytest.raises(Unauthorized) as caught:
                await generations.answer(refused, body, "r2")
            return served, caught.value.code
        finally:
            await limiter.close()
            await redis.aclose()

    try:
        served, code = asyncio.run(main())
    finally:
        db.dispose()
    assert _final(served.final) == ("def f():", "length", 4, 3)
    assert code == "key_revoked"
