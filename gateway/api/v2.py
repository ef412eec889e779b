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
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.api.direct import GenerationRoute
from gateway.api.v1 import SSE_HEADERS
from gateway.deps import IdentityDep, ServicesDep
from gateway.disconnect import unless_disconnected
from gateway.errors import GatewayError
from gateway.schemas import GenerateRequest
from gateway.upstream import Piece

router = APIRouter(prefix="/v2", tags=["v2"])


class Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=50, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, le=1000)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: list[str] | None = None
    model: str | None = Field(default=None, max_length=64)
    version: int | None = Field(default=None, ge=1)


class GenerateV2(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str]
    parameters: Parameters = Field(default_factory=Parameters)
    stream: bool = False

    @model_validator(mode="after")
    def _inputs(self) -> GenerateV2:
        if isinstance(self.inputs, list) and (self.stream or not 1 <= len(self.inputs) <= 16):
            raise ValueError("give 1 to 16 inputs, and only one when streaming")
        return self

    def request(self, prompt: str) -> GenerateRequest:
        return GenerateRequest(prompt=prompt, stream=self.stream, **self.parameters.model_dump())


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
        admitted = await svc.generations.admit(caller, body.request(prompts[0]), request_id)
        pieces = await svc.generations.stream(admitted)

        async def events() -> AsyncIterator[bytes]:
            ids: list[int] = []
            try:
                async for piece in pieces:
                    ids += piece.token_ids
                    if piece.text or not piece.final:
                        delta = {"text": piece.text, "token_ids": piece.token_ids}
                        yield f"data: {json.dumps(delta, ensure_ascii=False)}\n\n".encode()
                    if piece.final:
                        end = {
                            "id": request_id,
                            "model": admitted.call.model,
                            "version": admitted.call.version,
                            "output": _output("", ids, piece),
                        }
                        yield f"event: end\ndata: {json.dumps(end)}\n\n".encode()
            except GatewayError as exc:
                problem = {"code": exc.code, "title": exc.message, "status": exc.status}
                yield f"event: error\ndata: {json.dumps(problem)}\n\n".encode()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={**admitted.decision.headers(), **SSE_HEADERS},
        )

    async def collect() -> tuple[list[dict[str, Any]], dict[str, str], str, int]:
        outputs, headers, model, version = [], {}, "", 0
        for prompt in prompts:
            admitted = await svc.generations.admit(caller, body.request(prompt), request_id)
            headers = admitted.decision.headers()
            model, version = admitted.call.model, admitted.call.version
            final = await svc.generations.complete(admitted)
            outputs.append(_output(final.text, final.token_ids, final))
        return outputs, headers, model, version

    outputs, headers, model, version = await unless_disconnected(request, collect())
    return JSONResponse(
        {"id": request_id, "model": model, "version": version, "outputs": outputs},
        headers=headers,
    )


router.add_api_route("/generate", generate, methods=["POST"], route_class_override=GenerationRoute)
