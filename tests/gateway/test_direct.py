"""The generation endpoints' route class (its behaviour through HTTP is in test_e2e)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from gateway.api.direct import body_model, is_json
from gateway.deps import IdentityDep, ServicesDep
from gateway.schemas import GenerateRequest


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
