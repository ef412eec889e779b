"""Response cache in Redis for deterministic, non-streamed generations.

A request is deterministic when it is greedy (temperature 0) or names a seed: the same model
version and parameters give the same text. The key covers the model version and every
parameter, so a new production version never serves an old answer, and the caller (its API
key, else its subject), so a hit never tells one tenant what another asked. Cache failures are
counted and logged, and never fail the request. An answer is kept as the `/v1/generate` body
it was first given as (`id`, `model`, `version`, `completion`, `finish_reason`, `usage`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.triton.protocol import GenerateCall, Piece

log = logging.getLogger("tollgate.gateway.cache")


def cacheable(call: GenerateCall) -> bool:
    return not call.stream and (call.temperature == 0 or call.seed is not None)


def cache_key(call: GenerateCall, tenant: str) -> str:
    fields = {
        "tenant": tenant,
        "model": call.model,
        "version": call.version,
        "prompt": call.prompt,
        "max_tokens": call.max_tokens,
        "temperature": call.temperature,
        "top_p": call.top_p,
        "top_k": call.top_k,
        "seed": call.seed,
        "stop": list(call.stop),
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return f"tollgate:cache:{digest}"


class ResponseCache:
    def __init__(
        self,
        redis: Redis | None,
        ttl_s: int,
        on_error: Callable[[], None] | None = None,
        timeout_s: float = 1.0,
    ) -> None:
        self.redis = redis if ttl_s > 0 else None
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._on_error = on_error or (lambda: None)

    @property
    def enabled(self) -> bool:
        return self.redis is not None

    async def get(self, call: GenerateCall, tenant: str) -> Piece | None:
        """The kept answer as a final piece (text and counts, no token ids), if there is one."""
        if self.redis is None or not cacheable(call):
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self.redis.get(cache_key(call, tenant))
        except (RedisError, OSError, TimeoutError) as exc:
            self._on_error()
            log.warning("response cache read failed: %s", exc)
            return None
        if not raw:
            return None
        kept = json.loads(raw)
        usage = kept["usage"]
        return Piece(
            text=kept["completion"],
            token_ids=[],
            final=True,
            finish_reason=kept["finish_reason"],
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
        )

    async def put(self, call: GenerateCall, tenant: str, final: Piece) -> None:
        if self.redis is None or not cacheable(call):
            return
        body = {
            "id": call.request_id,
            "model": call.model,
            "version": call.version,
            "completion": final.text,
            "finish_reason": final.finish_reason,
            "usage": {
                "prompt_tokens": final.prompt_tokens,
                "completion_tokens": final.completion_tokens,
            },
        }
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.redis.set(cache_key(call, tenant), json.dumps(body), ex=self.ttl_s)
        except (RedisError, OSError, TimeoutError) as exc:
            self._on_error()
            log.warning("response cache write failed: %s", exc)
