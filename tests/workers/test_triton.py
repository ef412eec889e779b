"""The generate model through a real tritonserver: streaming, batching, errors, versions."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from hosting.cli import prepare, server_for
from hosting.config import HostingSettings
from hosting.model_config import write_model_config
from hosting.server import TritonServer
from tests.published import on_free_ports


@dataclass
class Result:
    text: str
    chunks: list[str]
    token_ids: list[int]
    finish_reason: str
    completion_tokens: int
    prompt_tokens: int = 0


@pytest.fixture(scope="module")
def server(published: HostingSettings) -> Iterator[TritonServer]:
    settings = on_free_ports(
        published,
        exit_timeout_s=2,
        # the batch tests below run on two lanes on any machine
        engine={"max_active": 8, "tokens_per_response": 2, "lanes": 2},
    )
    models = prepare(settings)
    assert models == {"gen": [1, 2]}
    # A second copy of the model with one slot and no queue, to observe backpressure.
    serial = settings.registry.model_repository / "gen-serial"
    serial.mkdir(exist_ok=True)
    for version in ("1",):
        link = serial / version
        if not link.exists():
            link.symlink_to(
                settings.registry.model_repository / "gen" / version, target_is_directory=True
            )
    write_model_config(
        settings.registry.model_repository,
        "gen-serial",
        [1],
        settings.engine.model_copy(update={"max_active": 1, "max_queue": 0}),
        settings.triton,
    )
    with server_for(settings, ["gen", "gen-serial"]) as running:
        yield running


async def _generate(
    url: str, prompt: str, *, model: str = "gen", version: str = "1", **params: Any
) -> Result:
    inputs = []
    values: dict[str, tuple[str, Any]] = {
        "text_input": ("BYTES", np.array([prompt.encode()], dtype=np.object_))
    }
    kinds = {
        "max_tokens": ("INT32", np.int32),
        "temperature": ("FP32", np.float32),
        "top_p": ("FP32", np.float32),
        "top_k": ("INT32", np.int32),
        "seed": ("UINT64", np.uint64),
        "stream": ("BOOL", np.bool_),
    }
    for name, value in params.items():
        if name == "stop":
            values[name] = ("BYTES", np.array([s.encode() for s in value], dtype=np.object_))
        else:
            datatype, dtype = kinds[name]
            values[name] = (datatype, np.array([value], dtype=dtype))
    for name, (datatype, array) in values.items():
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)

    async def one() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": model, "model_version": version, "inputs": inputs}

    chunks: list[str] = []
    ids: list[int] = []
    async with InferenceServerClient(url) as client:
        async for result, error in client.stream_infer(inputs_iterator=one()):
            if error is not None:
                raise error
            chunks.append(result.as_numpy("text_output")[0].decode())
            ids += result.as_numpy("token_ids").tolist()
            outcome = result.as_numpy("finish_reason")  # only the final response has it
            if outcome is not None:
                reason = outcome[0].decode()
                count = int(result.as_numpy("completion_tokens")[0])
                prompt_tokens = int(result.as_numpy("prompt_tokens")[0])
                return Result("".join(chunks), chunks, ids, reason, count, prompt_tokens)
    raise AssertionError("the stream ended without a final response")


def test_streams_text_deltas_and_a_final_response(server: TritonServer) -> None:
    # Long enough to outlast several of the response budget's gaps (2 ms for a stream alone).
    result = asyncio.run(
        _generate(server.grpc_url, "def main():\n", max_tokens=120, temperature=0.0)
    )
    assert result.finish_reason in {"length", "eos"}
    assert result.completion_tokens == len(result.token_ids) <= 120
    assert len(result.chunks) > 2, "text arrives in several responses"
    single = asyncio.run(
        _generate(server.grpc_url, "def main():\n", max_tokens=120, temperature=0.0, stream=False)
    )
    assert len(single.chunks) == 1
    assert (single.text, single.token_ids) == (result.text, result.token_ids)


def test_requests_arriving_into_a_running_batch_match_the_same_requests_alone(
    server: TritonServer,
) -> None:
    rng = random.Random(7)
    heads, tails = ["import", "def", "class", "for", "return"], ["os", "x", "self", "item"]
    prompts = [f"{rng.choice(heads)} {rng.choice(tails)}" * rng.randint(1, 4) for _ in range(24)]
    lengths = [rng.randint(8, 40) for _ in prompts]

    async def alone() -> list[str]:
        return [
            (await _generate(server.grpc_url, p, max_tokens=n, temperature=0.0)).text
            for p, n in zip(prompts, lengths, strict=True)
        ]

    async def arriving() -> list[str]:
        async def delayed(i: int) -> str:
            await asyncio.sleep(rng.random() * 0.5)
            return (
                await _generate(server.grpc_url, prompts[i], max_tokens=lengths[i], temperature=0.0)
            ).text

        return list(await asyncio.gather(*(delayed(i) for i in range(len(prompts)))))

    reference = asyncio.run(alone())
    assert asyncio.run(arriving()) == reference
    assert "gen v1 on cpu (2 lanes" in server.log_path.read_text(), "decoded on two lanes"


def test_seeded_sampling_repeats_alone_and_in_a_batch(server: TritonServer) -> None:
    params: dict[str, Any] = {"max_tokens": 20, "temperature": 0.9, "top_p": 0.95, "seed": 1234}
    first = asyncio.run(_generate(server.grpc_url, "class Foo", **params)).text

    async def crowded() -> list[str]:
        others = [
            _generate(server.grpc_url, f"x = {i}", max_tokens=30, temperature=1.0) for i in range(6)
        ]
        results = await asyncio.gather(_generate(server.grpc_url, "class Foo", **params), *others)
        return [r.text for r in results]

    assert asyncio.run(crowded())[0] == first


def test_stop_sequences_end_the_text(server: TritonServer) -> None:
    free = asyncio.run(_generate(server.grpc_url, "import os\n", max_tokens=40, temperature=0.0))
    stop = free.text[4:6]
    cut = asyncio.run(
        _generate(server.grpc_url, "import os\n", max_tokens=40, temperature=0.0, stop=[stop])
    )
    assert (cut.finish_reason, cut.text) == ("stop", free.text[: free.text.index(stop)])


def test_special_token_text_in_a_prompt_is_just_text(server: TritonServer) -> None:
    result = asyncio.run(_generate(server.grpc_url, "<|endoftext|>", max_tokens=2, temperature=0.0))
    assert result.prompt_tokens > 1, "the literal text must not become the end-of-text token"


def test_versions_live_side_by_side(server: TritonServer) -> None:
    for version in ("1", "2"):
        result = asyncio.run(
            _generate(server.grpc_url, "def", version=version, max_tokens=5, temperature=0.0)
        )
        assert result.completion_tokens >= 1


def test_bad_requests_get_their_own_error(server: TritonServer) -> None:
    with pytest.raises(InferenceServerException, match="max_tokens must be between 1 and 255"):
        asyncio.run(_generate(server.grpc_url, "x", max_tokens=900))
    with pytest.raises(InferenceServerException, match="context is 256"):
        asyncio.run(_generate(server.grpc_url, "import os\n" * 200, max_tokens=5))
    ok = asyncio.run(_generate(server.grpc_url, "x", max_tokens=3, temperature=0.0))
    assert ok.completion_tokens >= 1


def test_a_full_worker_answers_overloaded(server: TritonServer) -> None:
    async def burst() -> list[str]:
        calls = [
            _generate(server.grpc_url, "def", model="gen-serial", max_tokens=40) for _ in range(12)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        return [str(r) if isinstance(r, BaseException) else r.finish_reason for r in results]

    outcomes = asyncio.run(burst())
    assert any("overloaded" in o for o in outcomes), outcomes
    assert any(o in {"length", "eos"} for o in outcomes), outcomes


def test_a_cancelled_stream_frees_its_slot(server: TritonServer) -> None:
    async def scenario() -> Result:
        first_chunk = asyncio.Event()

        async def long_stream() -> None:
            inputs = grpcclient.InferInput("text_input", [1], "BYTES")
            inputs.set_data_from_numpy(np.array([b"def"], dtype=np.object_))
            limit = grpcclient.InferInput("max_tokens", [1], "INT32")
            limit.set_data_from_numpy(np.array([240], dtype=np.int32))

            async def one() -> AsyncIterator[dict[str, Any]]:
                yield {"model_name": "gen-serial", "model_version": "1", "inputs": [inputs, limit]}

            async with InferenceServerClient(server.grpc_url) as client:
                async for _result, _error in client.stream_infer(inputs_iterator=one()):
                    first_chunk.set()

        task = asyncio.create_task(long_stream())
        await asyncio.wait_for(first_chunk.wait(), 10)
        task.cancel()  # the client goes away mid-stream
        await asyncio.sleep(0.05)
        # One slot and no queue: this is refused unless the cancelled stream gave its slot back.
        return await _generate(
            server.grpc_url, "def", model="gen-serial", max_tokens=3, temperature=0.0
        )

    assert asyncio.run(scenario()).completion_tokens >= 1


def test_tritons_own_generate_endpoints(server: TritonServer) -> None:
    body = json.dumps(
        {"text_input": "def f(x):", "max_tokens": 40, "temperature": 0.0, "stream": False}
    ).encode()
    request = urllib.request.Request(  # noqa: S310
        f"{server.http_url}/v2/models/gen/versions/1/generate", data=body
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        answer = json.loads(response.read())
    assert answer["finish_reason"] in {"length", "eos"}
    body = json.dumps({"text_input": "def f(x):", "max_tokens": 40, "temperature": 0.0}).encode()
    request = urllib.request.Request(  # noqa: S310
        f"{server.http_url}/v2/models/gen/versions/1/generate_stream", data=body
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        events = [
            json.loads(line[5:])
            for line in response.read().decode().splitlines()
            if line.startswith("data:")
        ]
    assert len(events) > 1
    assert "".join(e["text_output"] for e in events) == answer["text_output"]
