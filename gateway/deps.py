"""Request dependencies: the app's services, and the caller's identity from the bearer token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from gateway.auth import Identity, TokenService
from gateway.cache import ResponseCache
from gateway.config import GatewaySettings
from gateway.errors import Unauthorized
from gateway.metrics import Metrics
from gateway.ratelimit import RateLimiter
from gateway.routing import RouteTable
from gateway.service import Generations
from gateway.upstream import TritonPool
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
    cache: ResponseCache


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def identity(request: Request, svc: Annotated[Services, Depends(services)]) -> Identity:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send an access token: Authorization: Bearer <token>")
    return svc.tokens.verify(token.strip())


ServicesDep = Annotated[Services, Depends(services)]
IdentityDep = Annotated[Identity, Depends(identity)]
