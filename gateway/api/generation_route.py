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

`DirectLane` goes one step further for these routes. Between the gateway's own middleware and a
route, a request passes about ten layers of Starlette and FastAPI (exception middleware, an exit
stack, the router matching each route and included router in turn); in an in-process
measurement of `/v1/generate` they were about a third of the app's own time. The lane sits
just inside `RequestContext`: a POST to exactly one of these paths is handed to its route's
handler at once, and an exception it raises is answered by the app's own exception handlers,
looked up as Starlette's exception middleware looks them up. Anything else (another method,
another path, a trailing slash) goes the usual way, and an exception without a handler of its
own (a bug) goes on to the server-error middleware outside, as it would have.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterable
from email.message import Message
from typing import Any, get_type_hints

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

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


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class DirectLane:
    """Pure-ASGI middleware: POSTs to the generation routes' paths go straight to them."""

    def __init__(self, app: ASGIApp, *, routes: Iterable[GenerationRoute]) -> None:
        self.app = app
        self.lanes: dict[str, tuple[GenerationRoute, Handler]] = {}
        for route in routes:
            if route.param_convertors or route.methods != {"POST"}:
                raise TypeError(f"{route.path}: a direct lane takes a fixed path and POST only")
            self.lanes[route.path] = (route, route.get_route_handler())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            lane = self.lanes.get(scope["path"])
            if lane is not None:
                await self._serve(*lane, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(
        self, route: GenerationRoute, handle: Handler, scope: Scope, receive: Receive, send: Send
    ) -> None:
        # What the router would have put in the scope for this route.
        scope["route"], scope["endpoint"], scope["path_params"] = route, route.endpoint, {}
        request = Request(scope, receive, send)
        try:
            response = await handle(request)
        except Exception as exc:
            handler = _handler_for(scope["app"].exception_handlers, exc)
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)


def _handler_for(handlers: dict[Any, Callable[..., Any]], exc: Exception) -> Any:
    """The app's handler for `exc` as Starlette's exception middleware finds it: by status
    code for an HTTP exception, else by the nearest class. `Exception` (and 500) belong to
    the server-error middleware, which also logs, so they are not looked up here."""
    if isinstance(exc, HTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None
