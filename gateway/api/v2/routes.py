"""`/v2`: one or several inputs per call, token ids and timings back, RFC 9457 errors.

Errors under `/v2` are `application/problem+json` documents (`type`, `title`, `status`,
`detail`, `instance`, plus the stable `code` and the `request_id`); see `app.py`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from gateway.api.generation_route import GenerationRoute
from gateway.api.sse import SSE_HEADERS
from gateway.api.v2.schemas import GenerateV2
from gateway.deps import IdentityDep, ServicesDep
from gateway.errors import GatewayError
from gateway.generation.generations import Stream
from gateway.server.disconnect import unless_disconnected
from gateway.triton.protocol import Piece

router = APIRouter(prefix="/v2", tags=["v2"])


def _output(text: str, ids: list[int], final: Piece) -> dict[str, Any]:
    return {
        "text": text,
        "finish_reason": final.finish_reason,
        "token_ids": ids,
        "usage": {
            "prompt_tokens": final.prompt_tokens,
            "completion_tokens": final.completion_tokens,
        },
        "timings": final.timings,
    }


async def generate(
    body: GenerateV2, request: Request, caller: IdentityDep, svc: ServicesDep
) -> Any:
    """Generate for each input; `timings` has queue, first-token and total milliseconds as
    measured by the worker. With `"stream": true` (one input), server-sent events carry
    `{"text", "token_ids"}` deltas and then `event: end` with the whole output."""
    request_id = request.state.request_id
    prompts = body.inputs if isinstance(body.inputs, list) else [body.inputs]
    if body.stream:
        stream = await svc.generations.stream(caller, body.request(prompts[0]), request_id)
        return StreamingResponse(
            _events(stream, request_id),
            media_type="text/event-stream",
            headers={**stream.headers, **SSE_HEADERS},
        )
    requests = [body.request(prompt) for prompt in prompts]
    answers = await unless_disconnected(
        request, svc.generations.answer_all(caller, requests, request_id)
    )
    last = answers[-1]
    outputs = [_output(a.final.text, a.final.token_ids, a.final) for a in answers]
    return JSONResponse(
        {
            "id": request_id,
            "model": last.call.model,
            "version": last.call.version,
            "outputs": outputs,
        },
        headers=last.headers,
    )


async def _events(stream: Stream, request_id: str) -> AsyncIterator[bytes]:
    ids: list[int] = []
    try:
        async for piece in stream.pieces:
            ids += piece.token_ids
            if piece.text or not piece.final:
                delta = {"text": piece.text, "token_ids": piece.token_ids}
                yield f"data: {json.dumps(delta, ensure_ascii=False)}\n\n".encode()
            if piece.final:
                end = {
                    "id": request_id,
                    "model": stream.call.model,
                    "version": stream.call.version,
                    "output": _output("", ids, piece),
                }
                yield f"event: end\ndata: {json.dumps(end)}\n\n".encode()
    except GatewayError as exc:
        problem = {"code": exc.code, "title": exc.message, "status": exc.status}
        yield f"event: error\ndata: {json.dumps(problem)}\n\n".encode()


router.add_api_route("/generate", generate, methods=["POST"], route_class_override=GenerationRoute)
