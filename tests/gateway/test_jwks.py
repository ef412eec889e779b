"""Tokens from an external identity provider, verified with keys from its JWKS URL."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

from gateway.config import GatewaySettings
from gateway.errors import Unauthorized
from gateway.identity.jwks import JWKSKeys
from gateway.identity.tokens import TokenService


class Provider:
    """An identity provider: RSA keys, a JWKS document served over real HTTP, and tokens."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}
        self.published: list[dict[str, Any]] = []
        self.fetches = 0
        self.down = False  # answers 503 to every fetch

    def rotate(self, kid: str) -> None:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys[kid] = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        entry = jwk.construct(public.decode(), "RS256").to_dict()
        self.published.append({**entry, "kid": kid, "use": "sig"})

    def token(self, kid: str, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": "https://idp.example",
            "aud": "tollgate",
            "sub": "bob",
            "scope": "generate",
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        return jwt.encode(body, self.keys[kid].decode(), algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def provider() -> Iterator[tuple[Provider, str]]:
    idp = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            idp.fetches += 1
            if idp.down:
                self.send_error(503)
                return
            body = json.dumps({"keys": idp.published}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield idp, f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def test_provider_tokens_verify_and_a_rotated_key_is_fetched(
    provider: tuple[Provider, str],
) -> None:
    idp, url = provider
    idp.rotate("k1")
    settings = GatewaySettings(jwks_url=url, jwks_issuer="https://idp.example")

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            keys = JWKSKeys(
                url,
                algorithms=settings.jwks_algorithms,
                cache_s=300,
                client=client,
                min_refresh_s=0,
            )
            service = TokenService(settings, jwks=keys.lookup)
            first = idp.token("k1")
            await keys.prepare("k1")
            assert service.verify(first).subject == "bob"
            await keys.prepare("k1")
            assert idp.fetches == 1, "a known key is served from the cache"

            idp.rotate("k2")
            second = idp.token("k2")
            with pytest.raises(Unauthorized, match="no key 'k2'"):
                service.verify(second)  # not fetched yet
            await keys.prepare("k2")
            assert idp.fetches == 2, "an unknown kid triggers a refetch"
            assert service.verify(second).subject == "bob"

            with pytest.raises(Unauthorized, match="issuer"):
                service.verify(idp.token("k1", iss="https://other.example"))
            # An HS256 token naming the provider's kid, signed with its public key as a secret:
            # the classic confusion attack. The key's algorithms are RS/PS only.
            public = json.dumps(idp.published[0])
            forged = jwt.encode(
                {"sub": "mallory", "aud": "tollgate"},
                public,
                algorithm="HS256",
                headers={"kid": "k1"},
            )
            with pytest.raises(Unauthorized, match="HS256"):
                service.verify(forged)

    asyncio.run(scenario())


def test_a_provider_url_without_its_issuer_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="TOLLGATE_JWKS_ISSUER must be set"):
        GatewaySettings(jwks_url="https://idp.example/jwks.json")


def test_a_provider_token_is_ours_only_with_its_issuer_and_never_names_an_api_key(
    provider: tuple[Provider, str],
) -> None:
    """A token signed by the provider's key for another issuer was accepted as admin, and its
    `key` claim charged it to (and hid it behind) another caller's API key."""
    idp, url = provider
    idp.rotate("k1")
    settings = GatewaySettings(jwks_url=url, jwks_issuer="https://idp.example")

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            keys = JWKSKeys(url, algorithms=settings.jwks_algorithms, cache_s=300, client=client)
            service = TokenService(settings, jwks=keys.lookup)
            await keys.prepare("k1")
            for iss in ("evil", None):
                claims: dict[str, Any] = {"scope": "admin generate", "key": "victim"}
                token = idp.token("k1", **claims, iss=iss)
                if iss is None:
                    token = jwt.encode(
                        {k: v for k, v in jwt.get_unverified_claims(token).items() if k != "iss"},
                        idp.keys["k1"].decode(),
                        algorithm="RS256",
                        headers={"kid": "k1"},
                    )
                with pytest.raises(Unauthorized):
                    service.verify(token)
            ours = service.verify(idp.token("k1", scope="admin generate", key="victim"))
            assert ours.scopes == {"admin", "generate"}
            assert ours.key_id == ""
            assert ours.bucket == "sub:bob"
            local, _ = service.issue(subject="svc", scopes=frozenset({"generate"}), key_id="k9")
            assert service.verify(local).key_id == "k9"  # the gateway's own tokens still do

    asyncio.run(scenario())


def test_a_provider_that_is_down_is_not_asked_on_every_request_and_old_keys_expire(
    provider: tuple[Provider, str],
) -> None:
    """Refresh failures used to leave the keys trusted forever and fetched on every request."""
    idp, url = provider
    idp.rotate("k1")
    settings = GatewaySettings(jwks_url=url, jwks_issuer="https://idp.example")
    now = [1000.0]

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            keys = JWKSKeys(
                url,
                algorithms=settings.jwks_algorithms,
                cache_s=300,
                client=client,
                min_refresh_s=10,
                clock=lambda: now[0],
            )
            service = TokenService(settings, jwks=keys.lookup)
            token = idp.token("k1")

            async def verify() -> str:
                await keys.prepare("k1")
                service._verified.clear()  # judge the key each time, not a cached verdict
                return service.verify(token).subject

            assert await verify() == "bob"
            idp.down = True
            now[0] += 301  # stale: a refresh is due, and fails
            assert await verify() == "bob", "within one more cache period, old keys still do"
            for _ in range(50):
                now[0] += 0.1
                await verify()
            assert idp.fetches == 2, "one attempt per min_refresh_s, not one per request"
            now[0] += 300  # two cache periods without a good fetch
            with pytest.raises(Unauthorized, match="no key 'k1'"):
                await verify()
            assert idp.fetches == 3
            idp.down = False
            now[0] += 10
            assert await verify() == "bob", "trusted again once the provider answers"
            assert idp.fetches == 4

    asyncio.run(scenario())
