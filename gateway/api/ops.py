"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from gateway.deps import ServicesDep

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(svc: ServicesDep) -> JSONResponse:
    """Readiness: the routing table was read from the registry within the last few refresh
    intervals, Redis (when configured) answers, and a Triton worker has a model's production
    version ready (the check lists each that is; one repository index per worker)."""
    checks: dict[str, str] = {}
    checks["registry"] = "ok" if svc.routes.fresh else "failed: the routing table is stale"
    if svc.limiter.redis is not None:
        try:
            async with asyncio.timeout(svc.settings.redis_timeout_s):
                await svc.limiter.redis.ping()
            checks["redis"] = "ok"
        except (RedisError, OSError, TimeoutError) as exc:
            checks["redis"] = f"failed: {type(exc).__name__}"
    serving = [
        (r.model, r.production.version)
        for r in svc.routes.routes.values()
        if r.production is not None
    ]
    held = await svc.pool.ready_models() if serving else {}
    ready = [f"{m} v{v}" for m, v in serving if v in held.get(m, ())]
    checks["workers"] = f"ready: {', '.join(ready)}" if ready else "no production version ready"
    ok = all(v == "ok" for k, v in checks.items() if k != "workers") and bool(ready)
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus(svc: ServicesDep) -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
