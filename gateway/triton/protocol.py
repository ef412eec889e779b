"""The generate model's wire format on Triton's gRPC API: one request, one response.

`infer_request` turns a `GenerateCall` into a `ModelInferRequest` of the generate contract's
inputs (`text_input`, `max_tokens`, sampling parameters, `stop`, ...), written as raw tensor
contents; `parse_response` turns one streamed response back into a `Piece`. Requests ask for
Triton's `triton_final_response` marker (`is_last`), which says when a stream is free again.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from tritonclient.grpc import service_pb2

FINAL = "triton_final_response"
_I32, _U64, _F32, _LEN = struct.Struct("<i"), struct.Struct("<Q"), struct.Struct("<f"), "<I"


@dataclass(frozen=True)
class GenerateCall:
    model: str
    version: int
    prompt: str
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = True
    request_id: str = ""
    traceparent: str = ""  # the gateway's span of this call, for the worker (W3C)


@dataclass
class Piece:
    """One response from the worker: text and ids; the final one also the outcome."""

    text: str
    token_ids: list[int]
    final: bool = False
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def _strings(values: list[bytes]) -> bytes:
    """A BYTES tensor's raw contents: each element as a 4-byte little-endian length, then it."""
    return b"".join(struct.pack(_LEN, len(v)) + v for v in values)


def infer_request(call: GenerateCall) -> service_pb2.ModelInferRequest:
    """The generate model's request for a call (the I/O contract in the design)."""
    request = service_pb2.ModelInferRequest(
        model_name=call.model, model_version=str(call.version), id=call.request_id
    )
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    if call.traceparent:
        request.parameters["traceparent"].string_param = call.traceparent
    tensors: list[tuple[str, str, int, bytes]] = [
        ("text_input", "BYTES", 1, _strings([call.prompt.encode()])),
        ("max_tokens", "INT32", 1, _I32.pack(call.max_tokens)),
        ("temperature", "FP32", 1, _F32.pack(call.temperature)),
        ("top_p", "FP32", 1, _F32.pack(call.top_p)),
        ("top_k", "INT32", 1, _I32.pack(call.top_k)),
        ("stream", "BOOL", 1, b"\x01" if call.stream else b"\x00"),
    ]
    if call.seed is not None:
        tensors.append(("seed", "UINT64", 1, _U64.pack(call.seed)))
    if call.stop:
        tensors.append(("stop", "BYTES", len(call.stop), _strings([s.encode() for s in call.stop])))
    for name, datatype, count, raw in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=[count])
        request.raw_input_contents.append(raw)
    return request


def _first_string(raw: bytes) -> str:
    (length,) = struct.unpack_from(_LEN, raw)
    return raw[4 : 4 + length].decode("utf-8")


def parse_response(response: service_pb2.ModelInferResponse) -> Piece:
    """A worker response as a Piece; only the final one carries `finish_reason` and the rest."""
    raw = dict(zip((o.name for o in response.outputs), response.raw_output_contents, strict=True))
    piece = Piece(text="", token_ids=[])
    if text := raw.get("text_output"):
        piece.text = _first_string(text)
    if ids := raw.get("token_ids"):
        piece.token_ids = list(struct.unpack(f"<{len(ids) // 4}i", ids))
    if reason := raw.get("finish_reason"):
        piece.final, piece.finish_reason = True, _first_string(reason)
        piece.prompt_tokens = _I32.unpack(raw["prompt_tokens"])[0]
        piece.completion_tokens = _I32.unpack(raw["completion_tokens"])[0]
        piece.timings = {
            name: _F32.unpack(raw[name])[0] for name in ("queue_ms", "first_token_ms", "total_ms")
        }
    return piece


def is_last(response: service_pb2.ModelInferResponse) -> bool:
    return FINAL in response.parameters and response.parameters[FINAL].bool_param
