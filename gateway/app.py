"""The gateway application: `create_app(settings)` wires the services and the routes.

Clients (registry database, Redis, Triton channels, the routing table) are opened in the
lifespan and kept on `app.state`; nothing is created at import. Every error leaves as one
JSON shape, `{"error": {"code", "message"}, "request_id"}`, never a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.sdk.trace.export import SpanExporter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.api import admin, ops
from gateway.api.generation_route import DirectLane, GenerationRoute
from gateway.api.openai import routes as openai
from gateway.api.v1 import routes as v1
from gateway.api.v2 import routes as v2
from gateway.config import GatewaySettings
from gateway.control.alias_changes import Operator
from gateway.control.canary_gates import GATE_ACTOR, CanaryGates
from gateway.control.drift import DriftWatch
from gateway.control.reconciler import Fleet
from gateway.deps import Services
from gateway.errors import GatewayError
from gateway.generation.cache import ResponseCache
from gateway.generation.generations import Generations
from gateway.generation.ratelimit import REVOKED_SET, RateLimiter
from gateway.generation.routing import RouteTable
from gateway.identity.api_keys import list_keys
from gateway.identity.jwks import JWKSKeys
from gateway.identity.tokens import TokenService
from gateway.server.disconnect import ClientGone
from gateway.server.middleware import RequestContext
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.tracing import Tracing
from gateway.triton.pool import TritonPool
from registry.db import RegistryDatabase, connect

log = logging.getLogger("tollgate.gateway")


def create_app(settings: GatewaySettings, *, span_exporter: SpanExporter | None = None) -> FastAPI:
    """The gateway app; `span_exporter` receives its spans (tests), else OTLP when set."""
    metrics = Metrics()
    tracing = Tracing(settings, span_exporter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = connect(settings.registry)
        redis = (
            # Every call is bounded by an asyncio timeout instead of a socket timeout, which
            # redis-py enforces with a task per command.
            Redis.from_url(
                settings.redis_url,
                socket_timeout=None,
                socket_connect_timeout=settings.redis_timeout_s,
            )
            if settings.redis_url
            else None
        )
        if redis is not None:
            await _sync_revocations(redis, db, settings.redis_timeout_s)
        http = httpx.AsyncClient()
        jwks = (
            JWKSKeys(
                settings.jwks_url,
                algorithms=settings.jwks_algorithms,
                cache_s=settings.jwks_cache_s,
                client=http,
            )
            if settings.jwks_url
            else None
        )
        routes = RouteTable(db, settings.route_refresh_s)
        pool = TritonPool(
            settings.endpoints,
            timeout_s=settings.request_timeout_s,
            health_interval_s=settings.health_interval_s,
        )
        limiter = RateLimiter(
            redis=redis,
            fail_open=settings.rate_limit_fail_open,
            timeout_s=settings.redis_timeout_s,
            on_redis_error=metrics.redis_errors.inc,
        )
        fleet = Fleet(settings=settings, db=db, pool=pool, routes=routes, metrics=metrics)
        operator = Operator(
            db=db,
            fleet=fleet,
            routes=routes,
            metrics=metrics,
            announce=lambda model: routes.announce(redis, model, settings.redis_timeout_s),
        )
        gates = CanaryGates(settings, routes)

        async def pull(model: str, version: int, reason: str) -> None:
            await operator.set_canary(model, version, 0, actor=GATE_ACTOR, reason=reason)

        gates.pull = pull
        gates.metrics = metrics
        drift = DriftWatch(settings, db, routes, metrics)
        app.state.services = Services(
            settings=settings,
            db=db,
            tokens=TokenService(settings, jwks=jwks.lookup if jwks else None),
            routes=routes,
            pool=pool,
            limiter=limiter,
            metrics=metrics,
            generations=Generations(
                settings=settings,
                db=db,
                routes=routes,
                pool=pool,
                limiter=limiter,
                metrics=metrics,
                cache=ResponseCache(
                    redis, settings.cache_ttl_s, metrics.redis_errors.inc, settings.redis_timeout_s
                ),
                gates=gates,
                tracer=tracing.tracer,
            ),
            jwks=jwks,
            fleet=fleet,
            operator=operator,
            gates=gates,
            tracing=tracing,
        )
        await routes.start(redis)
        await pool.start()
        await fleet.start()
        await gates.start()
        await drift.start()
        try:
            yield
        finally:
            await drift.stop()
            await gates.stop()
            await fleet.stop()
            await routes.stop()
            await pool.stop()
            await limiter.close()
            await http.aclose()
            if redis is not None:
                await redis.aclose()
            db.dispose()
            tracing.shutdown()

    app = FastAPI(
        title="Tollgate",
        summary="Text generation from versioned models: authenticated, rate-limited, streamed.",
        lifespan=lifespan,
        # The gateway makes its own spans and metrics (RequestContext, telemetry.metrics); this
        # also spares every request FastAPI's check for globally configured providers.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    # Starlette wraps the app in the last-added middleware first: RequestContext is outside
    # the direct lane, so requests on the lane are counted, timed and logged like the rest.
    _install_routes(app)
    app.add_middleware(
        RequestContext,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        tracing=tracing,
    )
    _install_error_handlers(app)

    return app


def _install_routes(app: FastAPI) -> None:
    """The routers, and the direct lane to the generation routes among them."""
    routers = (v1.router, openai.router, v2.router, ops.router, admin.router)
    for router in routers:
        app.include_router(router)
    app.add_middleware(
        DirectLane,
        routes=[r for router in routers for r in router.routes if isinstance(r, GenerationRoute)],
    )


async def _sync_revocations(redis: Redis, db: RegistryDatabase, timeout_s: float) -> None:
    """Make sure every key revoked in the database is in Redis's revoked set."""
    keys = await asyncio.to_thread(list_keys, db=db, include_revoked=True)
    revoked = [k.key_id for k in keys if not k.active]
    if revoked:
        try:
            async with asyncio.timeout(max(timeout_s, 2.0)):
                await redis.sadd(REVOKED_SET, *revoked)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not copy revoked keys to Redis: %s", exc)


def _error(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """One error shape for /v1 and the OpenAI routes; RFC 9457 problem details under /v2."""
    request_id = getattr(request.state, "request_id", "")
    if request.url.path.startswith("/v2/"):
        problem = {
            "type": f"https://tollgate.dev/problems/{code}",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": message,
            "instance": request.url.path,
            "code": code,
            "request_id": request_id,
        }
        return JSONResponse(
            problem, status_code=status, headers=headers, media_type="application/problem+json"
        )
    body = {"error": {"code": code, "message": message, **(extra or {})}, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return _error(request, exc.status, exc.code, exc.message, exc.headers, extra=exc.extra)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nobody reads it; the access log and metrics do

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            problems.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return _error(request, 422, "validation_error", "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return _error(request, 500, "internal_error", "an internal error occurred")
