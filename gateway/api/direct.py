"""The route class of the generation endpoints, the gateway's hot path.

FastAPI's general request handling (its dependency solver, and the body going through
`json.loads` and then its field machinery) took about an eighth of the event loop's busy time
at one caller in a profile of the gateway benchmark. The generation endpoints all have one shape,
`endpoint(body, request, caller, svc)`, so `GenerationRoute` calls them directly: the
services, the caller's identity (the same function as the `IdentityDep` dependency, so a
missing or bad token is a 401 before the body is looked at), then the JSON body validated by
pydantic-core in one step. A bad body raises FastAPI's own `RequestValidationError`, so the
app's handler answers it as it answers every other validation error. FastAPI still reads the
endpoint's signature for the OpenAPI document, which therefore describes the route as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any, get_type_hints

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from gateway.deps import authenticate, services

_SHAPE = ["body", "request", "caller", "svc"]


def body_model(endpoint: Callable[..., Any]) -> type[BaseModel]:
    """The endpoint's body model; refuses an endpoint of any other shape."""
    names = list(inspect.signature(endpoint).parameters)
    if names != _SHAPE:
        raise TypeError(
            f"{endpoint.__qualname__} takes ({', '.join(names)}); "
            f"a GenerationRoute endpoint takes ({', '.join(_SHAPE)})"
        )
    model = get_type_hints(endpoint)["body"]
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"{endpoint.__qualname__}: body must be a pydantic model")
    return model


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    if content_type == "application/json":  # nearly every request: no parsing
        return True
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _invalid(message: str, kind: str = "missing") -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body",), "msg": message}])


class GenerationRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        model = body_model(endpoint)

        async def handle(request: Request) -> Response:
            svc = await services(request)
            caller = await authenticate(request, svc)
            raw = await request.body()
            if not raw:
                raise _invalid("send the request as a JSON object")
            if not is_json(request.headers.get("content-type")):
                raise _invalid("send the body as JSON (Content-Type: application/json)", "json")
            try:
                body = model.model_validate_json(raw)
            except ValidationError as exc:
                errors = exc.errors(include_url=False)
                raise RequestValidationError(
                    [{**e, "loc": ("body", *e["loc"])} for e in errors]
                ) from None
            response = await endpoint(body, request, caller, svc)
            if not isinstance(response, Response):
                raise TypeError(f"{endpoint.__qualname__} must return a Response")
            return response

        return handle
