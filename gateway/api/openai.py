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
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.api.direct import GenerationRoute
from gateway.api.v1 import SSE_HEADERS
from gateway.deps import IdentityDep, ServicesDep
from gateway.disconnect import unless_disconnected
from gateway.errors import GatewayError
from gateway.schemas import GenerateRequest
from gateway.service import Admitted
from gateway.upstream import Piece

router = APIRouter(prefix="/v1", tags=["openai"])

_FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=64)
    prompt: str | list[str] = Field(description="One prompt, or several (not when streaming).")
    max_tokens: int = Field(default=16, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(default=None, max_length=256)
    n: Literal[1] = 1
    best_of: Literal[1] | None = None
    logprobs: None = None
    echo: Literal[False] = False
    suffix: None = None
    presence_penalty: float = Field(default=0.0, ge=0.0, le=0.0)
    frequency_penalty: float = Field(default=0.0, ge=0.0, le=0.0)
    logit_bias: dict[str, float] | None = Field(default=None, max_length=0)

    @model_validator(mode="after")
    def _one_prompt_when_streaming(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and (
            self.stream or not self.prompt or len(self.prompt) > 16
        ):
            raise ValueError("give 1 to 16 prompts, and only one when streaming")
        return self

    def generate_request(self, prompt: str) -> GenerateRequest:
        return GenerateRequest(
            prompt=prompt,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=self.stop,
            model=self.model,
            stream=self.stream,
        )


@router.get("/models")
async def models(caller: IdentityDep, svc: ServicesDep) -> dict[str, Any]:
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
        admitted = await svc.generations.admit(
            caller, body.generate_request(prompts[0]), request_id
        )
        pieces = await svc.generations.stream(admitted)
        return StreamingResponse(
            _chunks(admitted, pieces, f"cmpl-{request_id}", created),
            media_type="text/event-stream",
            headers={**admitted.decision.headers(), **SSE_HEADERS},
        )

    async def collect() -> tuple[list[dict[str, Any]], int, int, dict[str, str]]:
        choices, prompt_tokens, completion_tokens = [], 0, 0
        headers: dict[str, str] = {}
        for index, prompt in enumerate(prompts):
            request_body = body.generate_request(prompt)
            admitted = await svc.generations.admit(caller, request_body, request_id)
            headers = admitted.decision.headers()
            final = await svc.generations.complete(admitted)
            choices.append(
                {
                    "text": final.text,
                    "index": index,
                    "logprobs": None,
                    "finish_reason": _FINISH.get(final.finish_reason, "stop"),
                }
            )
            prompt_tokens += final.prompt_tokens
            completion_tokens += final.completion_tokens
        return choices, prompt_tokens, completion_tokens, headers

    choices, prompt_tokens, completion_tokens, headers = await unless_disconnected(
        request, collect()
    )
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
        headers=headers,
    )


async def _chunks(
    admitted: Admitted, pieces: AsyncIterator[Piece], cid: str, created: int
) -> AsyncIterator[bytes]:
    def chunk(text: str, finish: str | None, usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": admitted.call.model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        }
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

    try:
        async for piece in pieces:
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
