"""The Triton adapter: tensors in, engine requests; engine chunks out, decoupled responses.

Everything untyped from Triton stays in this module. `initialize` checks the configuration,
verifies and loads the version's artifact and starts the engine; `execute` turns each request
into a `GenerationRequest` and returns at once (responses go through each request's sender,
the last with the FINAL flag); a request that cannot start gets its own error response;
`finalize` stops the engine, letting active requests finish for a grace period.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

from workers.artifacts import ArtifactError, resolve
from workers.engine import Chunk, Engine, EngineConfig, EngineStopped, GenerationRequest, Overloaded
from workers.runtime import OnnxDecoder
from workers.sampling import InvalidRequest, SamplingParams

_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _error(message: str, code: str) -> Any:
    codes = pb_utils.TritonError
    return pb_utils.TritonError(message, getattr(codes, code, getattr(codes, "INTERNAL", 0)))


def _scalar(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    values = tensor.as_numpy().reshape(-1)
    return values[0] if values.size else None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def parse(request: Any) -> GenerationRequest:
    """A Triton request's tensors as a GenerationRequest (InvalidRequest on bad input)."""
    prompt = _scalar(request, "text_input")
    if prompt is None:
        raise InvalidRequest("text_input is required")
    stop_tensor = pb_utils.get_input_tensor_by_name(request, "stop")
    stop = (
        tuple(_text(s) for s in stop_tensor.as_numpy().reshape(-1))
        if stop_tensor is not None
        else ()
    )
    fields: dict[str, Any] = {"stop": stop}
    for name, kind in (
        ("max_tokens", int),
        ("temperature", float),
        ("top_p", float),
        ("top_k", int),
        ("seed", int),
    ):
        value = _scalar(request, name)
        if value is not None:
            fields[name] = kind(value)
    stream = _scalar(request, "stream")
    truncate = _scalar(request, "truncate")
    try:
        text = _text(prompt)
    except UnicodeDecodeError as exc:
        raise InvalidRequest("text_input is not valid UTF-8") from exc
    return GenerationRequest(
        prompt=text,
        params=SamplingParams(**fields),
        stream=bool(stream) if stream is not None else True,
        truncate=bool(truncate) if truncate is not None else False,
        request_id=str(request.request_id() or ""),
    )


def _response(chunk: Chunk) -> Any:
    """A streamed response carries the text delta and its token ids; the final one also the
    outcome, counts and timings (each output tensor adds to a response's fixed cost)."""
    outputs = [
        pb_utils.Tensor("text_output", np.array([chunk.text.encode("utf-8")], dtype=np.object_)),
        pb_utils.Tensor("token_ids", np.ascontiguousarray(chunk.token_ids, dtype=np.int32)),
    ]
    if not chunk.final:
        return pb_utils.InferenceResponse(output_tensors=outputs)
    outputs += [
        pb_utils.Tensor(
            "finish_reason", np.array([chunk.finish_reason.encode()], dtype=np.object_)
        ),
        pb_utils.Tensor("prompt_tokens", np.array([chunk.prompt_tokens], dtype=np.int32)),
        pb_utils.Tensor("completion_tokens", np.array([chunk.completion_tokens], dtype=np.int32)),
    ]
    for name in ("queue_ms", "first_token_ms", "total_ms"):
        outputs.append(
            pb_utils.Tensor(name, np.array([chunk.timings.get(name, 0.0)], dtype=np.float32))
        )
    return pb_utils.InferenceResponse(output_tensors=outputs)


class _Sink:
    def __init__(self, sender: Any) -> None:
        self._sender = sender

    def send(self, chunk: Chunk) -> None:
        if chunk.error:
            self._sender.send(
                pb_utils.InferenceResponse(error=_error(chunk.error, "UNAVAILABLE")), flags=_FINAL
            )
        else:
            self._sender.send(_response(chunk), flags=_FINAL if chunk.final else 0)

    def cancelled(self) -> bool:
        return bool(self._sender.is_cancelled())


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException("the generate model must be decoupled (streaming)")
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        try:
            served = resolve(version_dir, params.get("artifact", "auto"))
        except (ArtifactError, OSError, ValueError) as exc:
            raise pb_utils.TritonModelException(f"cannot serve {version_dir}: {exc}") from exc
        context = int(served.manifest.hyperparameters["model"]["context_length"])
        # Inside Triton the decoder shares the cores with the server's own threads (gRPC,
        # responses), so its thread pool sleeps when idle instead of spinning.
        decoder = OnnxDecoder(
            served.path,
            context_length=context,
            threads=int(params.get("threads", "0")),
            spin=False,
        )
        self._grace_s = float(params.get("grace_s", "10"))
        tokenizer = Tokenizer.from_file(str(served.tokenizer))
        # A prompt that contains the text "<|endoftext|>" is text, not a document boundary.
        tokenizer.encode_special_tokens = True
        self._engine = Engine(
            decoder=decoder,
            tokenizer=tokenizer,
            config=EngineConfig(
                max_active=int(params.get("max_active", "32")),
                max_queue=int(params.get("max_queue", "256")),
                tokens_per_response=int(params.get("tokens_per_response", "8")),
                response_interval_s=float(params.get("response_interval_ms", "20")) / 1000,
            ),
        )
        self._engine.start()
        pb_utils.Logger.log_info(
            f"serving {served.path.name} of {served.manifest.model} v{served.manifest.version}"
        )

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._engine.submit(parse(request), _Sink(sender))
            except InvalidRequest as exc:
                sender.send(
                    pb_utils.InferenceResponse(error=_error(str(exc), "INVALID_ARG")), flags=_FINAL
                )
            except (Overloaded, EngineStopped) as exc:
                message = f"overloaded: {exc}" if isinstance(exc, Overloaded) else str(exc)
                sender.send(
                    pb_utils.InferenceResponse(error=_error(message, "UNAVAILABLE")), flags=_FINAL
                )

    def finalize(self) -> None:
        self._engine.stop(self._grace_s)
