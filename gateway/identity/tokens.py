"""Access tokens: issuing local ones and verifying local or external ones.

Local tokens are HS256 JWTs signed with `TOLLGATE_JWT_SECRET`; tokens from an external identity
provider are verified with its JWKS keys (`jwks.py`). Either way the algorithm comes from our
allow-list for that key, never from the token's header, so `none` and HS/RS confusion cannot
happen; `exp`, `iat`, `iss`, `aud` and `sub` are required, and a token whose lifetime exceeds
15 minutes is refused even if its signature is good.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jose import JWTError, jwt

from gateway.config import GatewaySettings
from gateway.errors import Forbidden, Unauthorized

LOCAL_ALGORITHM = "HS256"
MAX_LIFETIME_S = 900
_CACHE_SIZE = 10_000
SCOPES = frozenset({"generate", "admin"})


@dataclass(frozen=True)
class Identity:
    """Who is calling: the token's subject and scopes, and the API key it came from."""

    subject: str
    scopes: frozenset[str]
    key_id: str = ""
    claims: dict[str, Any] = field(default_factory=dict, compare=False)

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this token lacks the '{scope}' scope", code="insufficient_scope")

    @property
    def bucket(self) -> str:
        """Whose rate limits apply: the API key's, else the subject's."""
        return f"key:{self.key_id}" if self.key_id else f"sub:{self.subject}"


def parse_scopes(text: str) -> frozenset[str]:
    scopes = frozenset(s for s in text.replace(",", " ").split() if s)
    unknown = scopes - SCOPES
    if unknown:
        raise ValueError(f"unknown scopes {sorted(unknown)}; known: {sorted(SCOPES)}")
    return scopes


class TokenService:
    """Issues local tokens and verifies bearer tokens (local, or external through JWKS)."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        jwks: Callable[[str], tuple[dict[str, Any], list[str]] | None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._jwks = jwks  # kid -> (JWK, algorithms allowed for it), or None if unknown
        self._clock = clock
        # Verified tokens until they expire: a client sends the same token for many requests.
        # Only the signature and claims are cached; key revocation is checked per request.
        self._verified: dict[str, tuple[float, Identity]] = {}

    def issue(
        self, *, subject: str, scopes: frozenset[str], key_id: str = "", ttl_s: int | None = None
    ) -> tuple[str, int]:
        """A signed access token and its lifetime in seconds."""
        ttl = min(ttl_s or self.settings.jwt_ttl_s, MAX_LIFETIME_S)
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "sub": subject,
            "scope": " ".join(sorted(scopes)),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
        }
        if key_id:
            claims["key"] = key_id
        token = jwt.encode(claims, self.settings.jwt_secret, algorithm=LOCAL_ALGORITHM)
        return token, ttl

    def verify(self, token: str) -> Identity:
        """The caller behind a bearer token, or Unauthorized saying what is wrong."""
        cached = self._verified.get(token)
        if cached is not None:
            expires, identity = cached
            if self._clock() < expires:
                return identity
            del self._verified[token]
        identity = self._verify(token)
        if len(self._verified) >= _CACHE_SIZE:
            self._verified.clear()  # crude but bounded; a full cache is refilled in one pass
        self._verified[token] = (float(identity.claims["exp"]), identity)
        return identity

    def _verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except JWTError as exc:
            raise Unauthorized("the bearer token is not a JWT") from exc
        kid = header.get("kid")
        key: dict[str, Any] | str
        if kid and self._jwks is not None:
            found = self._jwks(str(kid))
            if found is None:
                raise Unauthorized(f"no key '{kid}' at the identity provider")
            key, algorithms = found
            issuer, local = self.settings.jwks_issuer, False
        else:
            key, algorithms = self.settings.jwt_secret, [LOCAL_ALGORITHM]
            issuer, local = self.settings.jwt_issuer, True
        if header.get("alg") not in algorithms:
            raise Unauthorized(f"tokens signed with {header.get('alg')!r} are not accepted")
        leeway = self.settings.jwt_leeway_s
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.settings.jwt_audience,
                issuer=issuer,
                options={
                    "leeway": leeway,
                    "require_exp": True,
                    "require_iat": True,
                    "require_sub": True,
                    "require_aud": True,
                    "require_iss": True,
                },
            )
        except JWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        self._check_lifetime(claims, leeway)
        scopes = frozenset(str(claims.get("scope", "")).split()) & SCOPES
        # Only tokens this gateway issued name an API key (and so its bucket and revocation);
        # a `key` claim in a provider's token is not ours to trust.
        return Identity(
            subject=str(claims["sub"]),
            scopes=scopes,
            key_id=str(claims.get("key", "")) if local else "",
            claims=claims,
        )

    def _check_lifetime(self, claims: dict[str, Any], leeway: int) -> None:
        try:
            exp, iat = int(claims["exp"]), int(claims["iat"])
        except (KeyError, TypeError, ValueError) as exc:
            raise Unauthorized("the token needs numeric exp and iat claims") from exc
        if exp - iat > MAX_LIFETIME_S:
            raise Unauthorized("tokens may live at most 15 minutes; this one lives longer")
        if exp - self._clock() > MAX_LIFETIME_S + leeway:
            raise Unauthorized("the token expires more than 15 minutes from now")
