"""Token buckets per caller: one for requests, one for generated tokens.

A request takes one request token and reserves `max_tokens` generated tokens up front; when it
ends, what it did not generate is refunded. With Redis, admission is one atomic script call (it
also refuses revoked API keys), using Redis's own clock, so limits hold exactly across gateway
replicas. Refunds wait up to `REFUND_WINDOW_S` and go to Redis together, one script call for
all of them, so a busy gateway does not pay a second round trip per request; stopping the limiter
sends whatever is still waiting. Without Redis, or when Redis fails and `rate_limit_fail_open`
is set, the same arithmetic runs on in-process buckets with an injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from gateway.errors import RateLimited, Unauthorized, Unavailable
from gateway.server.redisline import Arg, RedisLine, Script

log = logging.getLogger("tollgate.gateway.ratelimit")

REVOKED_SET = "tollgate:revoked-keys"
REFUND_WINDOW_S = 0.01

# KEYS: requests bucket, tokens bucket, revoked set.
# ARGV: request capacity, request rate (/s), token capacity, token rate (/s), token cost, key id.
# Returns {allowed (1, 0; -1 revoked), requests left x1000, tokens left x1000,
#          ms until the request could pass}.
_TAKE = """
if ARGV[6] ~= '' and redis.call('SISMEMBER', KEYS[3], ARGV[6]) == 1 then
  return {-1, 0, 0, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function level(key, cap, rate)
  local v = redis.call('HMGET', key, 'at', 'level')
  if not v[1] then return cap end
  return math.min(cap, tonumber(v[2]) + math.max(0, now - tonumber(v[1])) * rate)
end
local rcap, rrate = tonumber(ARGV[1]), tonumber(ARGV[2])
local tcap, trate, cost = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local r, k = level(KEYS[1], rcap, rrate), level(KEYS[2], tcap, trate)
if r < 1 or k < cost then
  local wait = 0
  if r < 1 then wait = (1 - r) / rrate end
  if k < cost then wait = math.max(wait, (cost - k) / trate) end
  return {0, math.floor(r * 1000), math.floor(k * 1000), math.ceil(wait * 1000)}
end
r, k = r - 1, k - cost
redis.call('HSET', KEYS[1], 'at', tostring(now), 'level', tostring(r))
redis.call('HSET', KEYS[2], 'at', tostring(now), 'level', tostring(k))
redis.call('PEXPIRE', KEYS[1], math.ceil((rcap - r) / rrate * 1000) + 1000)
redis.call('PEXPIRE', KEYS[2], math.ceil((tcap - k) / trate * 1000) + 1000)
return {1, math.floor(r * 1000), math.floor(k * 1000), 0}
"""

# KEYS: token buckets. ARGV: for each bucket in turn, its capacity and the amount to give back.
# A bucket that has expired is full already. Returns how many buckets were refunded.
_REFUND = """
local given = 0
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'at', 'level')
  if v[1] then
    local cap, amount = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
    redis.call('HSET', key, 'level', tostring(math.min(cap, tonumber(v[2]) + amount)))
    given = given + 1
  end
end
return given
"""

_TAKE_SCRIPT, _REFUND_SCRIPT = Script(_TAKE), Script(_REFUND)


@dataclass(frozen=True)
class Limits:
    requests_capacity: int
    requests_per_s: float
    tokens_capacity: int
    tokens_per_s: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limits: Limits
    requests_left: float
    tokens_left: float
    retry_after_s: float = 0.0
    backend: str = "redis"

    def headers(self) -> dict[str, str]:
        """OpenAI-style `x-ratelimit-*` and IETF `RateLimit` / `RateLimit-Policy` headers."""
        lim = self.limits
        reset_requests = max(0.0, (lim.requests_capacity - self.requests_left)) / (
            lim.requests_per_s
        )
        reset_tokens = max(0.0, (lim.tokens_capacity - self.tokens_left)) / lim.tokens_per_s
        requests_left, tokens_left = int(self.requests_left), int(self.tokens_left)
        window_r = math.ceil(lim.requests_capacity / lim.requests_per_s)
        window_t = math.ceil(lim.tokens_capacity / lim.tokens_per_s)
        return {
            "x-ratelimit-limit-requests": str(lim.requests_capacity),
            "x-ratelimit-remaining-requests": str(requests_left),
            "x-ratelimit-reset-requests": f"{reset_requests:.3f}s",
            "x-ratelimit-limit-tokens": str(lim.tokens_capacity),
            "x-ratelimit-remaining-tokens": str(tokens_left),
            "x-ratelimit-reset-tokens": f"{reset_tokens:.3f}s",
            "RateLimit-Policy": (
                f'"requests";q={lim.requests_capacity};w={window_r}, '
                f'"tokens";q={lim.tokens_capacity};w={window_t}'
            ),
            "RateLimit": (
                f'"requests";r={requests_left};t={math.ceil(reset_requests)}, '
                f'"tokens";r={tokens_left};t={math.ceil(reset_tokens)}'
            ),
        }


class LocalBuckets:
    """In-process token buckets with the same arithmetic as the Redis script."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._levels: dict[str, tuple[float, float]] = {}  # bucket -> (at, level)
        self._lock = threading.Lock()

    def _level(self, key: str, capacity: float, rate: float, now: float) -> float:
        at, level = self._levels.get(key, (now, capacity))
        return min(capacity, level + max(0.0, now - at) * rate)

    def take(self, bucket: str, limits: Limits, cost: int) -> Decision:
        """Revoked keys are not its concern: without Redis the gateway checks the database."""
        with self._lock:
            now = self._clock()
            rk, tk = f"{bucket}:requests", f"{bucket}:tokens"
            r = self._level(rk, limits.requests_capacity, limits.requests_per_s, now)
            k = self._level(tk, limits.tokens_capacity, limits.tokens_per_s, now)
            if r < 1 or k < cost:
                wait = (1 - r) / limits.requests_per_s if r < 1 else 0.0
                if k < cost:
                    wait = max(wait, (cost - k) / limits.tokens_per_s)
                return Decision(False, limits, r, k, wait, backend="local")
            self._levels[rk], self._levels[tk] = (now, r - 1), (now, k - cost)
            return Decision(True, limits, r - 1, k - cost, backend="local")

    def refund(self, bucket: str, limits: Limits, amount: int) -> None:
        with self._lock:
            tk = f"{bucket}:tokens"
            if tk in self._levels:
                at, level = self._levels[tk]
                self._levels[tk] = (at, min(limits.tokens_capacity, level + amount))


class RateLimiter:
    """Admission for one request: Redis when configured (fail open or closed), else local."""

    def __init__(
        self,
        *,
        redis: Redis | None,
        fail_open: bool = True,
        local: LocalBuckets | None = None,
        on_redis_error: Callable[[], None] | None = None,
        timeout_s: float = 1.0,
    ) -> None:
        self.redis = redis
        self.fail_open = fail_open
        self.timeout_s = timeout_s
        self.local = local or LocalBuckets()
        self._on_redis_error = on_redis_error or (lambda: None)
        # Admissions and refunds go down a pipelined line of their own (`gateway.server.redisline`);
        # redis-py's script objects only where a line cannot follow the client's settings.
        self._line = RedisLine.for_client(redis, timeout_s) if redis is not None else None
        self._registered: dict[str, AsyncScript] = (
            {s.sha: redis.register_script(s.source) for s in (_TAKE_SCRIPT, _REFUND_SCRIPT)}
            if redis is not None and self._line is None
            else {}
        )
        self._pending: dict[tuple[str, int], int] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def take(self, bucket: str, limits: Limits, cost: int, key_id: str = "") -> Decision:
        """Admit a request or raise RateLimited (429), Unauthorized (revoked key), or
        Unavailable when Redis is down and limits fail closed."""
        decision = await self._decide(bucket, limits, cost, key_id)
        if not decision.allowed:
            raise RateLimitExceeded(decision)
        return decision

    async def _run(self, script: Script, keys: list[str], args: Sequence[Arg]) -> Any:
        """One script call within the timeout, on the line (which keeps the deadlines of its
        commands itself, and drops a stuck connection) or through redis-py."""
        if self._line is not None:
            return await self._line.evalsha(script, keys, args)
        async with asyncio.timeout(self.timeout_s):
            return await self._registered[script.sha](keys=keys, args=args)

    async def _decide(self, bucket: str, limits: Limits, cost: int, key_id: str) -> Decision:
        if self.redis is None:
            return self.local.take(bucket, limits, cost)
        keys = [f"tollgate:rl:{bucket}:requests", f"tollgate:rl:{bucket}:tokens", REVOKED_SET]
        args: list[Arg] = [
            limits.requests_capacity,
            limits.requests_per_s,
            limits.tokens_capacity,
            limits.tokens_per_s,
            cost,
            key_id,
        ]
        try:
            allowed, r, k, wait_ms = await self._run(_TAKE_SCRIPT, keys, args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._on_redis_error()
            if not self.fail_open:
                log.error("rate limiter: Redis failed, refusing (fail-closed): %s", exc)
                raise Unavailable(
                    "rate limiting is unavailable; retry shortly", code="ratelimit_unavailable"
                ) from exc
            log.warning("rate limiter: Redis failed, using in-process buckets: %s", exc)
            return self.local.take(bucket, limits, cost)
        if int(allowed) == -1:
            raise Unauthorized("this API key has been revoked", code="key_revoked")
        return Decision(
            int(allowed) == 1, limits, int(r) / 1000, int(k) / 1000, int(wait_ms) / 1000
        )

    async def refund(self, bucket: str, limits: Limits, amount: int, decision: Decision) -> None:
        """Give back reserved tokens that were not generated, now."""
        self.refund_soon(bucket, limits, amount, decision)
        await self.flush()

    def refund_soon(self, bucket: str, limits: Limits, amount: int, decision: Decision) -> None:
        """Give back reserved tokens within `REFUND_WINDOW_S`, with the other refunds then."""
        if amount <= 0:
            return
        if decision.backend == "local" or self.redis is None:
            self.local.refund(bucket, limits, amount)
            return
        key = (bucket, limits.tokens_capacity)
        self._pending[key] = self._pending.get(key, 0) + amount
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(REFUND_WINDOW_S)
        finally:
            self._flusher = None
        await self.flush()

    async def flush(self) -> None:
        """Send every waiting refund to Redis: one script call for all of them."""
        pending, self._pending = self._pending, {}
        if not pending or self.redis is None:
            return
        keys = [f"tollgate:rl:{bucket}:tokens" for bucket, _ in pending]
        args: list[Arg] = [
            n for (_, capacity), amount in pending.items() for n in (capacity, amount)
        ]
        try:
            await self._run(_REFUND_SCRIPT, keys, args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._on_redis_error()
            log.warning(
                "rate limiter: could not refund tokens to %d buckets: %s", len(pending), exc
            )

    async def close(self) -> None:
        """Stop waiting and send what is left."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()
        if self._line is not None:
            await self._line.close()


class RateLimitExceeded(RateLimited):
    """429 carrying the decision, so the response still has the rate-limit headers."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(
            f"rate limit exceeded; retry in {decision.retry_after_s:.1f} s",
            retry_after_s=decision.retry_after_s,
        )
        self.decision = decision

    @property
    def headers(self) -> dict[str, str]:
        return {**self.decision.headers(), **super().headers}
