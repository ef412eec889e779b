"""OpenAI-compatible `POST /v1/completions` and `GET /v1/models`.

The official `openai` client (and tools built on it) work against Tollgate by pointing
`base_url` at `<gateway>/v1` and passing an access token as the API key. Fields Tollgate does
not implement are accepted only at their neutral values (`n=1`, no `logprobs`, no `echo`,
zero penalties), so a request never silently means something else.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from gateway.api.generation_route import GenerationRoute
from gateway.api.openai.schemas import CompletionRequest
from gateway.api.sse import SSE_HEADERS
from gateway.deps import ActiveIdentityDep, IdentityDep, ServicesDep
from gateway.errors import GatewayError
from gateway.generation.generations import Stream
from gateway.server.disconnect import unless_disconnected

router = APIRouter(prefix="/v1", tags=["openai"])

_FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}


@router.get("/models")
async def models(caller: ActiveIdentityDep, svc: ServicesDep) -> dict[str, Any]:
    """The models that have a production version, in the OpenAI list format."""
    caller.require("generate")
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "tollgate"}
        for name, route in sorted(svc.routes.routes.items())
        if route.production is not None
    ]
    return {"object": "list", "data": data}


async def completions(
    body: CompletionRequest, request: Request, caller: IdentityDep, svc: ServicesDep
) -> Any:
    """Text completion in the OpenAI format (streaming as `data:` chunks, then `[DONE]`)."""
    request_id = request.state.request_id
    prompts = body.prompt if isinstance(body.prompt, list) else [body.prompt]
    created = int(time.time())
    if body.stream:
        stream = await svc.generations.stream(caller, body.generate_request(prompts[0]), request_id)
        return StreamingResponse(
            _chunks(stream, f"cmpl-{request_id}", created),
            media_type="text/event-stream",
            headers={**stream.headers, **SSE_HEADERS},
        )
    requests = [body.generate_request(prompt) for prompt in prompts]
    answers = await unless_disconnected(
        request, svc.generations.answer_all(caller, requests, request_id)
    )
    choices = [
        {
            "text": a.final.text,
            "index": index,
            "logprobs": None,
            "finish_reason": _FINISH.get(a.final.finish_reason, "stop"),
        }
        for index, a in enumerate(answers)
    ]
    prompt_tokens = sum(a.final.prompt_tokens for a in answers)
    completion_tokens = sum(a.final.completion_tokens for a in answers)
    return JSONResponse(
        {
            "id": f"cmpl-{request_id}",
            "object": "text_completion",
            "created": created,
            "model": body.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
        headers=answers[-1].headers,
    )


async def _chunks(stream: Stream, cid: str, created: int) -> AsyncIterator[bytes]:
    def chunk(text: str, finish: str | None, usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": stream.call.model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        }
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

    try:
        async for piece in stream.pieces:
            if piece.final:
                usage = {
                    "prompt_tokens": piece.prompt_tokens,
                    "completion_tokens": piece.completion_tokens,
                    "total_tokens": piece.prompt_tokens + piece.completion_tokens,
                }
                yield chunk(piece.text, _FINISH.get(piece.finish_reason, "stop"), usage)
                yield b"data: [DONE]\n\n"
            elif piece.text:
                yield chunk(piece.text, None)
    except GatewayError as exc:
        error = {"error": {"code": exc.code, "message": exc.message}}
        yield f"data: {json.dumps(error)}\n\n".encode()


router.add_api_route(
    "/completions", completions, methods=["POST"], route_class_override=GenerationRoute
)
