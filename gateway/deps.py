"""Request dependencies: the app's services, and the caller's identity from the bearer token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from jose import JWTError, jwt

from gateway.config import GatewaySettings
from gateway.control.alias_changes import Operator
from gateway.control.canary_gates import CanaryGates
from gateway.control.reconciler import Fleet
from gateway.errors import Unauthorized
from gateway.generation.generations import Generations
from gateway.generation.ratelimit import RateLimiter
from gateway.generation.routing import RouteTable
from gateway.identity.api_keys import active_key
from gateway.identity.jwks import JWKSKeys
from gateway.identity.tokens import Identity, TokenService
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.tracing import Tracing
from gateway.triton.pool import TritonPool
from registry.db import RegistryDatabase


@dataclass
class Services:
    """Everything a request may need, opened in the app's lifespan."""

    settings: GatewaySettings
    db: RegistryDatabase
    tokens: TokenService
    routes: RouteTable
    pool: TritonPool
    limiter: RateLimiter
    metrics: Metrics
    generations: Generations
    fleet: Fleet
    operator: Operator
    gates: CanaryGates
    tracing: Tracing
    jwks: JWKSKeys | None = None


async def services(request: Request) -> Services:
    """(async, like every dependency here: FastAPI runs a plain `def` in a thread pool.)"""
    found: Services = request.app.state.services
    return found


async def identity(request: Request, svc: Annotated[Services, Depends(services)]) -> Identity:
    return await authenticate(request, svc)


async def authenticate(request: Request, svc: Services) -> Identity:
    """The caller's identity from its bearer token; raises Unauthorized (401)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send an access token: Authorization: Bearer <token>")
    if svc.jwks is not None:
        try:
            kid = jwt.get_unverified_header(token.strip()).get("kid")
        except JWTError:
            kid = None  # verify() says what is wrong with it
        if kid:
            await svc.jwks.prepare(str(kid))
    with svc.tracing.tracer.start_as_current_span("auth"):
        return svc.tokens.verify(token.strip())


async def active_identity(
    caller: Annotated[Identity, Depends(identity)], svc: Annotated[Services, Depends(services)]
) -> Identity:
    """The caller, whose API key (if the token names one) is still active in the registry
    database: every replica sees a revocation at once, with or without Redis. For the routes
    off the generation path; there the rate limiter's admission refuses revoked keys."""
    if caller.key_id:
        await active_key(db=svc.db, key_id=caller.key_id)
    return caller


ServicesDep = Annotated[Services, Depends(services)]
IdentityDep = Annotated[Identity, Depends(identity)]
ActiveIdentityDep = Annotated[Identity, Depends(active_identity)]
