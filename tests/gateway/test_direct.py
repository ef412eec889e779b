"""The generation endpoints' route class and their direct lane (their behaviour through HTTP
is in test_e2e)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.api.generation_route import DirectLane, GenerationRoute, body_model, is_json
from gateway.app import _install_error_handlers
from gateway.deps import IdentityDep, ServicesDep
from gateway.errors import RateLimited
from gateway.generation.request import GenerateRequest


def test_it_takes_the_body_model_from_the_endpoint() -> None:
    async def endpoint(
        body: GenerateRequest, request: Request, caller: IdentityDep, svc: ServicesDep
    ) -> None:
        return None

    assert body_model(endpoint) is GenerateRequest


def test_it_refuses_an_endpoint_of_another_shape() -> None:
    async def swapped(request: Request, body: GenerateRequest) -> None:
        return None

    async def untyped(body: dict, request: Request, caller: IdentityDep, svc: ServicesDep) -> None:  # type: ignore[type-arg]
        return None

    with pytest.raises(TypeError, match=r"takes \(request, body\)"):
        body_model(swapped)
    with pytest.raises(TypeError, match="pydantic model"):
        body_model(untyped)


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/problem+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("", False),
        (None, False),
    ],
)
def test_only_json_bodies_are_read(content_type: str | None, expected: bool) -> None:
    assert is_json(content_type) is expected


class _Probe(GenerationRoute):
    """A generation route whose handler answers from the request alone (no services)."""

    def get_route_handler(self) -> Any:
        async def handle(request: Request) -> Response:
            ask = (await request.json()).get("raise")
            if ask == "gateway":
                raise RateLimited("slow down", retry_after_s=2.0)
            if ask == "validation":
                raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "x"}])
            if ask == "bug":
                raise ValueError("a bug")
            return JSONResponse(
                {
                    "through_router": "router" in request.scope,
                    "route": request.scope["route"].path,
                }
            )

        return handle


def _app() -> tuple[FastAPI, list[GenerationRoute]]:
    async def endpoint(
        body: GenerateRequest, request: Request, caller: IdentityDep, svc: ServicesDep
    ) -> None:
        return None

    router = APIRouter(prefix="/v9")
    router.add_api_route("/gen", endpoint, methods=["POST"], route_class_override=_Probe)
    app = FastAPI()
    app.include_router(router)
    routes = [r for r in router.routes if isinstance(r, GenerationRoute)]
    app.add_middleware(DirectLane, routes=routes)
    _install_error_handlers(app)
    return app, routes


def test_a_post_to_a_generation_path_skips_the_router_and_keeps_the_route_in_the_scope() -> None:
    app, _ = _app()
    with TestClient(app) as client:
        answer = client.post("/v9/gen", json={})
    assert answer.status_code == 200
    assert answer.json() == {"through_router": False, "route": "/v9/gen"}


def test_other_methods_and_paths_go_the_usual_way() -> None:
    app, _ = _app()
    with TestClient(app, follow_redirects=False) as client:
        wrong_method = client.get("/v9/gen")
        slash = client.post("/v9/gen/", json={})
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert slash.status_code in {307, 404}


@pytest.mark.parametrize(
    ("ask", "status", "code"),
    [("gateway", 429, "rate_limited"), ("validation", 422, "validation_error")],
)
def test_errors_on_the_lane_get_the_apps_own_answers(ask: str, status: int, code: str) -> None:
    app, _ = _app()
    with TestClient(app) as client:
        answer = client.post("/v9/gen", json={"raise": ask})
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code
    if ask == "gateway":
        assert answer.headers["retry-after"] == "2"


def test_an_error_without_its_own_handler_reaches_the_server_error_handler() -> None:
    app, _ = _app()
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/v9/gen", json={"raise": "bug"})
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal_error"


def test_a_lane_takes_only_fixed_paths_and_post() -> None:
    async def endpoint(
        body: GenerateRequest, request: Request, caller: IdentityDep, svc: ServicesDep
    ) -> None:
        return None

    router = APIRouter()
    router.add_api_route("/gen/{name}", endpoint, methods=["POST"], route_class_override=_Probe)
    router.add_api_route("/put", endpoint, methods=["PUT"], route_class_override=_Probe)
    for route in router.routes:
        assert isinstance(route, GenerationRoute)
        with pytest.raises(TypeError, match="fixed path and POST only"):
            DirectLane(FastAPI(), routes=[route])
