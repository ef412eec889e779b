"""The gateway's Triton client: the wire encoding, and kept streams through a real server."""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import replace
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2

from gateway.errors import InvalidInput, Unavailable, UpstreamTimeout
from gateway.triton.pool import Endpoint, TritonPool, _classify
from gateway.triton.protocol import GenerateCall, Piece, infer_request, parse_response
from hosting.cli import prepare, server_for
from hosting.config import HostingSettings
from tests.published import free_port, on_free_ports
from tests.services import silent_server


def _tensors(request: service_pb2.ModelInferRequest) -> dict[str, tuple[str, list[int], bytes]]:
    return {
        t.name: (t.datatype, list(t.shape), raw)
        for t, raw in zip(request.inputs, request.raw_input_contents, strict=True)
    }


def test_a_call_becomes_the_generate_models_request() -> None:
    call = GenerateCall(
        model="gen",
        version=3,
        prompt="héllo",
        max_tokens=7,
        temperature=0.5,
        top_k=4,
        seed=2**63,
        stop=("\n", "END"),
        stream=False,
        request_id="r-1",
    )
    request = infer_request(call)
    assert (request.model_name, request.model_version, request.id) == ("gen", "3", "r-1")
    assert request.parameters["triton_enable_empty_final_response"].bool_param
    tensors = _tensors(request)
    prompt = "héllo".encode()
    assert tensors["text_input"] == ("BYTES", [1], struct.pack("<I", len(prompt)) + prompt)
    assert tensors["max_tokens"] == ("INT32", [1], struct.pack("<i", 7))
    assert tensors["temperature"] == ("FP32", [1], struct.pack("<f", 0.5))
    assert tensors["top_k"] == ("INT32", [1], struct.pack("<i", 4))
    assert tensors["seed"] == ("UINT64", [1], struct.pack("<Q", 2**63))
    assert tensors["stream"] == ("BOOL", [1], b"\x00")
    assert tensors["stop"] == ("BYTES", [2], b"\x01\x00\x00\x00\n\x03\x00\x00\x00END")
    assert "traceparent" not in request.parameters
    traced = infer_request(replace(call, traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01"))
    assert traced.parameters["traceparent"].string_param.startswith("00-1111")


def test_seed_and_stop_are_left_out_when_not_given() -> None:
    tensors = _tensors(infer_request(GenerateCall(model="gen", version=1, prompt="", max_tokens=1)))
    assert "seed" not in tensors
    assert "stop" not in tensors
    assert tensors["text_input"][2] == b"\x00\x00\x00\x00"


def _response(
    outputs: dict[str, tuple[str, bytes]], *, last: bool
) -> service_pb2.ModelInferResponse:
    response = service_pb2.ModelInferResponse(model_name="gen", model_version="1")
    for name, (datatype, raw) in outputs.items():
        response.outputs.add(name=name, datatype=datatype, shape=[1])
        response.raw_output_contents.append(raw)
    response.parameters["triton_final_response"].bool_param = last
    return response


def test_responses_decode_to_pieces() -> None:
    text = "→ ok".encode()
    middle = _response(
        {
            "text_output": ("BYTES", struct.pack("<I", len(text)) + text),
            "token_ids": ("INT32", struct.pack("<3i", 5, 6, 70000)),
        },
        last=False,
    )
    assert parse_response(middle) == Piece(text="→ ok", token_ids=[5, 6, 70000])
    final = _response(
        {
            "text_output": ("BYTES", b"\x00\x00\x00\x00"),
            "token_ids": ("INT32", b""),
            "finish_reason": ("BYTES", b"\x06\x00\x00\x00length"),
            "prompt_tokens": ("INT32", struct.pack("<i", 4)),
            "completion_tokens": ("INT32", struct.pack("<i", 9)),
            "queue_ms": ("FP32", struct.pack("<f", 0.5)),
            "first_token_ms": ("FP32", struct.pack("<f", 2.0)),
            "total_ms": ("FP32", struct.pack("<f", 8.0)),
        },
        last=True,
    )
    piece = parse_response(final)
    assert (piece.final, piece.finish_reason, piece.text, piece.token_ids) == (
        True,
        "length",
        "",
        [],
    )
    assert (piece.prompt_tokens, piece.completion_tokens) == (4, 9)
    assert piece.timings == {"queue_ms": 0.5, "first_token_ms": 2.0, "total_ms": 8.0}


def test_worker_errors_map_to_gateway_errors() -> None:
    busy = _classify("overloaded: 4 requests are active and 0 queued")
    assert isinstance(busy, Unavailable)
    assert busy.code == "overloaded"
    invalid = _classify("invalid request: the prompt has 900 tokens and the model's context is 256")
    assert isinstance(invalid, InvalidInput)
    assert invalid.message.startswith("the prompt has 900 tokens")
    failed = _classify("Triton at 10.0.0.7:8001: failed to stat file /models/gen/3/model.py")
    assert isinstance(failed, Unavailable)
    assert failed.message == "the model worker failed", "what the worker said stays in the log"


async def _generate(pool: TritonPool, prompt: str) -> list[tuple[str, list[int], str]]:
    call = GenerateCall(model="gen", version=1, prompt=prompt, max_tokens=4, temperature=0)
    return [(p.text, p.token_ids, p.finish_reason) async for p in pool.generate(call)]


def test_kept_streams_carry_requests_and_survive_a_server_restart(
    published: HostingSettings,
) -> None:
    settings = on_free_ports(published, exit_timeout_s=2)
    prepare(settings)

    async def scenario() -> None:
        pool = TritonPool(
            [f"127.0.0.1:{settings.triton.grpc_port}"], timeout_s=30, health_interval_s=60
        )
        endpoint: Endpoint = pool.endpoints[0]
        try:
            with server_for(settings, ["gen"]):
                # What is ready, for /readyz: one index per endpoint; one that does not
                # answer adds nothing.
                assert await pool.ready_models() == {"gen": {1, 2}}  # both published
                with_a_dead_one = TritonPool(
                    [endpoint.url, f"127.0.0.1:{free_port()}"], timeout_s=30, health_interval_s=60
                )
                assert await with_a_dead_one.ready_models() == {"gen": {1, 2}}
                await with_a_dead_one.stop()
                first = await _generate(pool, "def f():")
                again = await _generate(pool, "def f():")
                assert first[-1][2] == "length"
                assert first == again, "a kept stream carries the next request the same"
                assert len(endpoint._idle) == 1, "one stream, kept between requests"
                together = await asyncio.gather(*(_generate(pool, "x = ") for _ in range(3)))
                assert all(pieces[-1][2] == "length" for pieces in together)
                assert len(endpoint._idle) == 3
                # A deadline shorter than the generation: 504-style error, the stream is
                # cancelled (not kept), and the worker's slot is free for the next request.
                hurried = TritonPool([endpoint.url], timeout_s=0.001, health_interval_s=60)
                long = GenerateCall(model="gen", version=1, prompt="x", max_tokens=250)
                with pytest.raises(UpstreamTimeout):
                    [p async for p in hurried.generate(long)]
                assert not hurried.endpoints[0]._idle
                await hurried.stop()
                assert await _generate(pool, "def f():") == first
            # Triton has gone (asked on a channel of its own: a failed connection would put
            # the pool's channel into gRPC's reconnect back-off, failing the next request).
            gone = TritonPool([endpoint.url], timeout_s=30, health_interval_s=60)
            assert await gone.ready_models() == {}
            await gone.stop()
            # Triton went away and comes back: the kept streams are dead; requests still work,
            # also once the health check has seen the server back (the streams end then, so
            # a request must not take one that has ended).
            with server_for(settings, ["gen"]):
                await pool.check_health()
                assert endpoint.healthy
                after = await _generate(pool, "def f():")
                assert after == first
        finally:
            await pool.stop()

    asyncio.run(scenario())


def test_a_deadline_ends_the_call_at_whatever_moment_it_expires(
    published: HostingSettings,
) -> None:
    """Deadlines from half a millisecond to 40 ms land before the stream opens, while the
    request is written, between responses: every call ends (the timeout, or its answer)."""
    settings = on_free_ports(published)
    prepare(settings)

    async def scenario() -> None:
        url = f"127.0.0.1:{settings.triton.grpc_port}"
        pool = TritonPool([url], timeout_s=60, health_interval_s=60)
        outcomes: dict[str, int] = {"timeout": 0, "answered": 0}
        try:
            with server_for(settings, ["gen"]):
                first = await _generate(pool, "def f():")
                for i in range(60):
                    hurried = TritonPool(
                        [url], timeout_s=0.0005 + (i % 20) * 0.002, health_interval_s=60
                    )
                    call = GenerateCall(model="gen", version=1, prompt="x", max_tokens=40)

                    async def drain(pool: TritonPool = hurried, call: GenerateCall = call) -> None:
                        [p async for p in pool.generate(call)]

                    try:
                        await asyncio.wait_for(drain(), timeout=20)
                        outcomes["answered"] += 1
                    except UpstreamTimeout:
                        outcomes["timeout"] += 1
                    await hurried.stop()
                assert outcomes["timeout"] > 0
                assert await _generate(pool, "def f():") == first, "the worker still serves"
        finally:
            await pool.stop()

    asyncio.run(scenario())


def test_a_deadline_that_ends_a_call_still_connecting_is_a_timeout_not_a_dead_server() -> None:
    """A server that accepts the connection and never speaks (a hung process, a black-holed
    network): the call ends at its deadline as a timeout, and the endpoint is not marked down
    (its health is the health checker's call)."""

    async def scenario() -> None:
        async with silent_server() as port:
            pool = TritonPool([f"127.0.0.1:{port}"], timeout_s=0.05, health_interval_s=60)
            call = GenerateCall(model="gen", version=1, prompt="x", max_tokens=4)
            try:
                for _ in range(3):
                    started = time.monotonic()
                    with pytest.raises(UpstreamTimeout):
                        [p async for p in pool.generate(call)]
                    assert time.monotonic() - started < 5
                assert pool.endpoints[0].healthy
            finally:
                await pool.stop()

    asyncio.run(scenario())


def test_a_call_that_fails_because_its_deadline_cancelled_it_is_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gRPC may report a call cancelled at its deadline as UNAVAILABLE (seen while a fresh
    channel was connecting): that is the timeout, and the server is not marked down."""

    async def cancelled_as_unavailable(
        self: Endpoint, request: service_pb2.ModelInferRequest, deadline: Any
    ) -> Any:
        while not deadline.expired:
            await asyncio.sleep(0.005)
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "cancelled"
        )

    monkeypatch.setattr(Endpoint, "_send", cancelled_as_unavailable)

    async def scenario() -> None:
        pool = TritonPool([f"127.0.0.1:{free_port()}"], timeout_s=0.02, health_interval_s=60)
        try:
            with pytest.raises(UpstreamTimeout):
                [p async for p in pool.generate(GenerateCall("gen", 1, "x", 4))]
            assert pool.endpoints[0].healthy
        finally:
            await pool.stop()

    asyncio.run(scenario())


def test_a_pool_without_endpoints_answers_unavailable() -> None:
    async def scenario() -> None:
        pool = TritonPool([], timeout_s=1, health_interval_s=60)
        call = GenerateCall(model="gen", version=1, prompt="x", max_tokens=4)
        with pytest.raises(Unavailable, match="no Triton endpoint is configured"):
            [p async for p in pool.generate(call)]

    asyncio.run(scenario())


def test_an_unreachable_worker_is_named_in_the_log_not_to_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through a real gRPC channel to a port nothing listens on."""
    url = f"127.0.0.1:{free_port()}"

    async def scenario() -> Unavailable:
        pool = TritonPool([url], timeout_s=5, health_interval_s=60)
        call = GenerateCall(model="gen", version=1, prompt="x", max_tokens=4)
        try:
            with pytest.raises(Unavailable) as caught:
                [p async for p in pool.generate(call)]
            return caught.value
        finally:
            await pool.stop()

    with caplog.at_level("WARNING", logger="tollgate.gateway.upstream"):
        error = asyncio.run(scenario())
    assert error.message == "a model worker is unreachable"
    assert url not in error.message
    assert url in caplog.text, "the operator still learns which worker it was"


def test_a_worker_back_from_a_long_restart_gets_work_within_seconds(
    published: HostingSettings,
) -> None:
    """Down for 30 s with health checks every 2 s (as the gateway runs them), gRPC's own
    reconnect back-off would have grown to about 10 s; the gateway caps it at 1 s."""
    settings = on_free_ports(published, exit_timeout_s=2)
    prepare(settings)

    async def scenario() -> tuple[float, int]:
        pool = TritonPool(
            [f"127.0.0.1:{settings.triton.grpc_port}"], timeout_s=30, health_interval_s=60
        )
        try:
            with server_for(settings, ["gen"]):
                await _generate(pool, "x")
            down = time.monotonic()
            while time.monotonic() - down < 30:
                await pool.check_health()
                assert not pool.endpoints[0].healthy
                await asyncio.sleep(2)
            with server_for(settings, ["gen"]):
                ready, refused = time.monotonic(), 0
                while True:
                    await pool.check_health()
                    try:
                        await _generate(pool, "x")
                        return time.monotonic() - ready, refused
                    except Unavailable:
                        refused += 1
                        await asyncio.sleep(0.2)
        finally:
            await pool.stop()

    waited, refused = asyncio.run(scenario())
    assert waited < 5, (
        f"work reached the worker {waited:.1f} s after it was back ({refused} refused)"
    )
