"""Keys of an external identity provider, fetched from its JWKS URL and cached.

Keys are trusted for `jwks_cache_s`; a token naming an unknown `kid` triggers one refetch
(the provider may have rotated keys). Fetches are tried at most every `min_refresh_s`, whether
the last one worked or failed, so neither random key ids nor a provider that is down make the
gateway fetch on every request. When refreshing fails, the keys last fetched stay trusted for
one more `jwks_cache_s` (a short outage of the provider locks nobody out), and not after: a
key the provider has withdrawn is not trusted forever. Each key's algorithms come from our
allow-list, narrowed by the key's type and its own `alg` when it declares one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

log = logging.getLogger("tollgate.gateway.jwks")

_FAMILY = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA",)}


class JWKSKeys:
    def __init__(
        self,
        url: str,
        *,
        algorithms: list[str],
        cache_s: float,
        client: httpx.AsyncClient,
        min_refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url, self.algorithms, self.cache_s = url, algorithms, cache_s
        self.min_refresh_s = min_refresh_s
        self._client, self._clock = client, clock
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched = -float("inf")  # when the keys were last fetched
        self._tried = -float("inf")  # when a fetch was last attempted, whatever came of it

    async def prepare(self, kid: str) -> None:
        """Make sure `kid` is known if the provider has it (fetching when stale or unknown)."""
        now = self._clock()
        if kid in self._keys and now - self._fetched < self.cache_s:
            return
        if now - self._tried < self.min_refresh_s:
            return
        self._tried = now
        try:
            response = await self._client.get(self.url, timeout=5.0)
            response.raise_for_status()
            keys = response.json().get("keys", [])
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            log.warning("could not fetch JWKS from %s: %s", self.url, exc)
            return
        self._keys = {str(k["kid"]): k for k in keys if isinstance(k, dict) and "kid" in k}
        self._fetched = self._clock()

    def lookup(self, kid: str) -> tuple[dict[str, Any], list[str]] | None:
        """The key and the algorithms accepted for it, or None if unknown, unusable, or last
        fetched more than two cache periods ago (refreshing has failed since)."""
        key = self._keys.get(kid)
        if key is None or self._clock() - self._fetched > 2 * self.cache_s:
            return None
        prefixes = _FAMILY.get(str(key.get("kty")), ())
        allowed = [a for a in self.algorithms if a.startswith(prefixes)] if prefixes else []
        if "alg" in key:
            allowed = [a for a in allowed if a == key["alg"]]
        return (key, allowed) if allowed else None
