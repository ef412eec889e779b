"""The Triton adapter: tensors in, engine requests; engine chunks out, decoupled responses.

Everything untyped from Triton stays in this module. `initialize` checks the configuration,
verifies and loads the version's artifact and starts the engine; `execute` turns each request
into a `GenerationRequest` and returns at once (responses go through each request's sender,
the last with the FINAL flag); a request that cannot start gets its own error response;
`finalize` stops the engine, letting active requests finish for a grace period.

If the engine's loop dies, every open request has its error and the version takes itself out
of service: it asks Triton to reload the model without it (or to unload the model when it was
the only version), so Triton reports it not ready and routes nothing more to it, while the
model's other versions keep serving. Loading the model again brings it back.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from workers.artifacts import ArtifactError, resolve
from workers.requests import Chunk, EngineStopped, GenerationRequest, Overloaded
from workers.sampling import InvalidRequest, SamplingParams
from workers.serving import build_engine

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
        self._config, self._name = config, args["model_name"]
        self._version = int(args["model_version"])
        self._control_url = params.get("control_url", "http://127.0.0.1:8000")
        version_dir = Path(args["model_repository"]) / args["model_version"]
        try:
            served = resolve(
                version_dir, params.get("artifact", "auto"), params.get("device", "auto")
            )
        except (ArtifactError, OSError, ValueError) as exc:
            raise pb_utils.TritonModelException(f"cannot serve {version_dir}: {exc}") from exc
        self._grace_s = float(params.get("grace_s", "10"))
        self._engine, plan = build_engine(served, params, on_failure=self._engine_failed)
        self._engine.start()
        pb_utils.Logger.log_info(
            f"serving {served.path.name} of {served.manifest.model} v{served.manifest.version} "
            f"on {served.device} ({plan})"
        )

    def _engine_failed(self, reason: str) -> None:
        # Model control waits for this version's own finalize, so it runs on a thread of its own.
        threading.Thread(
            target=self._retire, args=(reason,), name="tollgate-retire", daemon=True
        ).start()

    def _retire(self, reason: str) -> None:
        """Reload the model without this version, so Triton stops reporting it ready.

        The open requests' errors go out first: Triton unloads a version only once its
        requests have finished. Model control goes through Triton's HTTP API, plain socket
        I/O that leaves this process free to answer requests meanwhile."""
        self._engine.stop(self._grace_s)
        policy = self._config.get("version_policy", {}).get("specific", {})
        others = sorted({int(v) for v in policy.get("versions", [])} - {self._version})
        pb_utils.Logger.log_error(
            f"{self._name} v{self._version} is out of service: {reason}; load the model "
            "again to serve it"
        )
        if others:
            config = {**self._config, "version_policy": {"specific": {"versions": others}}}
            action, body = "load", {"parameters": {"config": json.dumps(config)}}
        else:
            action, body = "unload", {}
        request = urllib.request.Request(  # noqa: S310 (an http URL from our own config)
            f"{self._control_url}/v2/repository/models/{self._name}/{action}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=600):  # noqa: S310 (our own server)
                pass
        except (urllib.error.URLError, OSError) as exc:  # logged: nothing else can act on it
            pb_utils.Logger.log_error(f"could not take {self._name} v{self._version} out: {exc}")

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._engine.submit(parse(request), _Sink(sender))
            except InvalidRequest as exc:
                sender.send(
                    pb_utils.InferenceResponse(
                        error=_error(f"invalid request: {exc}", "INVALID_ARG")
                    ),
                    flags=_FINAL,
                )
            except (Overloaded, EngineStopped) as exc:
                message = f"overloaded: {exc}" if isinstance(exc, Overloaded) else str(exc)
                sender.send(
                    pb_utils.InferenceResponse(error=_error(message, "UNAVAILABLE")), flags=_FINAL
                )

    def finalize(self) -> None:
        self._engine.stop(self._grace_s)
