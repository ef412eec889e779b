"""`/v1`: generate (JSON or server-sent events) and the API-key token exchange."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time
from email.utils import format_datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from gateway.api.generation_route import GenerationRoute
from gateway.api.sse import SSE_HEADERS
from gateway.api.v1.schemas import GenerateResponse, TokenResponse, Usage
from gateway.config import GatewaySettings
from gateway.deps import IdentityDep, ServicesDep
from gateway.errors import GatewayError, InvalidInput, Unauthorized
from gateway.generation.generations import Stream
from gateway.generation.request import GenerateRequest
from gateway.identity.api_keys import KeyInfo, authenticate_key
from gateway.identity.tokens import parse_scopes
from gateway.server.disconnect import unless_disconnected

router = APIRouter(prefix="/v1", tags=["v1"])


def retirement_headers(settings: GatewaySettings) -> dict[str, str]:
    """`Deprecation` (RFC 9745) and `Sunset` (RFC 8594) once retirement dates are set."""
    headers = {}
    if settings.v1_deprecated_at is not None:
        moment = datetime.combine(settings.v1_deprecated_at, time(), tzinfo=UTC)
        headers["Deprecation"] = f"@{int(moment.timestamp())}"
    if settings.v1_sunset is not None:
        moment = datetime.combine(settings.v1_sunset, time(), tzinfo=UTC)
        headers["Sunset"] = format_datetime(moment, usegmt=True)
        headers["Link"] = '</v2/generate>; rel="successor-version"'
    return headers


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def generate(
    body: GenerateRequest, request: Request, caller: IdentityDep, svc: ServicesDep
) -> Any:
    """Continue `prompt` with the model's production (or canary) version.

    With `"stream": true` the answer is a stream of server-sent events: `data: {"delta": ...}`
    as text arrives, then `event: end` with `finish_reason` and usage (or `event: error`)."""
    request_id = request.state.request_id
    retirement = retirement_headers(svc.settings)
    if body.stream:
        stream = await svc.generations.stream(caller, body, request_id)
        return StreamingResponse(
            _events(stream, request_id),
            media_type="text/event-stream",
            headers={**stream.headers, **retirement, **SSE_HEADERS},
        )
    answer = await svc.generations.answer(
        caller, body, request_id, cached=True, watch=functools.partial(unless_disconnected, request)
    )
    final = answer.final
    response = GenerateResponse(
        id=request_id,
        model=answer.call.model,
        version=answer.call.version,
        completion=final.text,
        finish_reason=final.finish_reason,
        usage=Usage(prompt_tokens=final.prompt_tokens, completion_tokens=final.completion_tokens),
    )
    headers = {**answer.headers, **retirement}
    if answer.cache is not None:
        headers["X-Cache"] = answer.cache
    # pydantic writes the JSON itself (what JSONResponse would write from a dict of it).
    return Response(response.model_dump_json(), headers=headers, media_type="application/json")


router.add_api_route(
    "/generate",
    generate,
    methods=["POST"],
    response_model=GenerateResponse,
    route_class_override=GenerationRoute,
)


async def _events(stream: Stream, request_id: str) -> AsyncIterator[bytes]:
    try:
        async for piece in stream.pieces:
            if piece.text:
                yield _sse({"delta": piece.text})
            if piece.final:
                usage = {
                    "prompt_tokens": piece.prompt_tokens,
                    "completion_tokens": piece.completion_tokens,
                }
                end = {
                    "id": request_id,
                    "model": stream.call.model,
                    "version": stream.call.version,
                    "finish_reason": piece.finish_reason,
                    "usage": usage,
                }
                yield _sse(end, event="end")
    except GatewayError as exc:
        yield _sse({"error": {"code": exc.code, "message": exc.message}}, event="error")


@router.post("/token", response_model=TokenResponse)
async def token(request: Request, svc: ServicesDep) -> TokenResponse:
    """OAuth2 client credentials: exchange an API key (`client_secret`, or HTTP Basic) for a
    short-lived access token. `scope` may narrow the key's scopes."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise InvalidInput(
            "send application/x-www-form-urlencoded with grant_type=client_credentials",
            code="invalid_request",
        )
    try:
        raw = (await request.body()).decode()
    except UnicodeDecodeError:
        raise InvalidInput("the form must be UTF-8", code="invalid_request") from None
    form = {k: v[-1] for k, v in urllib.parse.parse_qs(raw).items()}
    if form.get("grant_type") != "client_credentials":
        raise InvalidInput("grant_type must be client_credentials", code="unsupported_grant_type")
    secret = form.get("client_secret", "")
    auth = request.headers.get("authorization", "")
    if not secret and auth.lower().startswith("basic "):
        try:
            _, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthorized("malformed Basic credentials", code="invalid_client") from exc
    if not secret:
        raise Unauthorized("send the API key as client_secret", code="invalid_client")
    info = await _authenticate(svc, secret)
    scopes = info.scopes
    if form.get("scope"):
        try:
            asked = parse_scopes(form["scope"])
        except ValueError as exc:
            raise InvalidInput(str(exc), code="invalid_scope") from exc
        if not asked <= scopes:
            raise InvalidInput("the key does not have every scope asked for", code="invalid_scope")
        scopes = asked
    access, ttl = svc.tokens.issue(subject=f"key:{info.key_id}", scopes=scopes, key_id=info.key_id)
    return TokenResponse(access_token=access, expires_in=ttl, scope=" ".join(sorted(scopes)))


async def _authenticate(svc: ServicesDep, secret: str) -> KeyInfo:
    info = await asyncio.to_thread(authenticate_key, db=svc.db, presented=secret)
    if info is None:
        raise Unauthorized("unknown or revoked API key", code="invalid_client")
    return info
