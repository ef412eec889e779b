"""Access tokens: what is accepted, and every way a forged or overlong token is refused."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from gateway.api.v1.routes import retirement_headers
from gateway.config import DEVELOPMENT_SECRET, GatewaySettings
from gateway.errors import Forbidden, Unauthorized
from gateway.identity.tokens import TokenService, parse_scopes
from tests.cli import run_module

SECRET = "s" * 40


def _claims(now: float, **extra: Any) -> dict[str, Any]:
    return {
        "iss": "tollgate",
        "aud": "tollgate",
        "sub": "alice",
        "scope": "generate",
        "iat": int(now),
        "exp": int(now) + 600,
        **extra,
    }


def test_an_issued_token_verifies_with_its_subject_and_scopes() -> None:
    service = TokenService(GatewaySettings(jwt_secret=SECRET))
    token, ttl = service.issue(subject="alice", scopes=frozenset({"generate"}), key_id="k1")
    identity = service.verify(token)
    assert (identity.subject, identity.scopes, identity.key_id, ttl) == (
        "alice",
        frozenset({"generate"}),
        "k1",
        900,
    )
    identity.require("generate")
    with pytest.raises(Forbidden, match="admin"):
        identity.require("admin")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"exp": None}, "exp"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "evil"}, "issuer"),
        ({"sub": None}, "sub"),
    ],
)
def test_claims_are_checked(change: dict[str, Any], error: str) -> None:
    now = time.time()
    claims = {k: v for k, v in {**_claims(now), **change}.items() if v is not None}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match=f"(?i){error}"):
        TokenService(GatewaySettings(jwt_secret=SECRET)).verify(token)


def test_expired_tokens_are_refused_after_the_leeway_only() -> None:
    service = TokenService(GatewaySettings(jwt_secret=SECRET))  # leeway 30 s
    now = time.time()
    late = jwt.encode(_claims(now - 800, exp=int(now) - 60), SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match=r"(?i)expired"):
        service.verify(late)
    just = jwt.encode(_claims(now - 200, exp=int(now) - 5), SECRET, algorithm="HS256")
    assert service.verify(just).subject == "alice"


def test_tokens_living_longer_than_15_minutes_are_refused_even_when_signed() -> None:
    now = time.time()
    token = jwt.encode(_claims(now, exp=int(now) + 3600), SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="15 minutes"):
        TokenService(GatewaySettings(jwt_secret=SECRET)).verify(token)


def test_the_header_never_chooses_the_algorithm() -> None:
    now = time.time()
    service = TokenService(GatewaySettings(jwt_secret=SECRET))
    unsigned = jwt.encode(_claims(now), "", algorithm="HS256").rsplit(".", 1)[0]
    header_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"  # {"alg":"none","typ":"JWT"}
    with pytest.raises(Unauthorized):
        service.verify(header_none + "." + unsigned.split(".")[1] + ".")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(Unauthorized, match="RS256"):
        service.verify(jwt.encode(_claims(now), pem.decode(), algorithm="RS256"))
    with pytest.raises(Unauthorized, match="HS512"):
        service.verify(jwt.encode(_claims(now), SECRET, algorithm="HS512"))
    with pytest.raises(Unauthorized, match=r"(?i)signature"):
        service.verify(jwt.encode(_claims(now), "another-secret" * 4, algorithm="HS256"))
    with pytest.raises(Unauthorized, match="not a JWT"):
        service.verify("not-a-token")


def test_scopes_are_parsed_strictly() -> None:
    assert parse_scopes("generate,admin") == frozenset({"generate", "admin"})
    with pytest.raises(ValueError, match="unknown scopes"):
        parse_scopes("generate,root")


def test_outside_local_mode_the_default_or_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="TOLLGATE_JWT_SECRET"):
        GatewaySettings(mode="production")
    with pytest.raises(ValueError, match="TOLLGATE_JWT_SECRET"):
        GatewaySettings(mode="production", jwt_secret="short")
    assert GatewaySettings(mode="production", jwt_secret=SECRET).jwt_secret == SECRET
    assert GatewaySettings().jwt_secret == DEVELOPMENT_SECRET


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gateway.internal"])  # noqa: S104
def test_the_development_secret_never_serves_beyond_this_machine(host: str) -> None:
    """Anyone who can reach the port could sign admin tokens with the public secret."""
    done = run_module(
        "gateway", "serve", env={**os.environ, "TOLLGATE_HOST": host, "TOLLGATE_JWT_SECRET": ""}
    )
    assert done.returncode != 0
    assert f"TOLLGATE_HOST={host} reaches beyond this machine" in done.stderr
    assert "Traceback" not in done.stderr
    for loopback in ("127.0.0.1", "::1", "localhost"):
        assert GatewaySettings(host=loopback).jwt_secret == DEVELOPMENT_SECRET
    assert GatewaySettings(host=host, jwt_secret=SECRET).host == host


def test_v1_retirement_headers_appear_once_dates_are_set() -> None:
    assert retirement_headers(GatewaySettings()) == {}
    headers = retirement_headers(
        GatewaySettings(v1_deprecated_at="2027-01-01", v1_sunset="2027-07-01")
    )
    assert headers["Deprecation"] == "@1798761600"
    assert headers["Sunset"] == "Thu, 01 Jul 2027 00:00:00 GMT"
    assert "successor-version" in headers["Link"]
