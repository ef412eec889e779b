"""A version whose engine dies, in a real tritonserver: its requests fail, it leaves service,
and the model's other versions keep serving."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from hosting.cli import server_for
from hosting.config import HostingSettings
from hosting.model_config import write_model_config
from hosting.server import TritonServer
from registry.manifest import describe_file, read_manifest, write_manifest
from tests.published import on_free_ports
from tests.workers.test_triton import _generate
from workers.artifacts import resolve


def _break(version_dir: Path, choice: str) -> None:
    """Swap the served graph for one that loads (same inputs) but fails on every run."""
    served = resolve(version_dir, choice)  # type: ignore[arg-type]
    graph = onnx.load(str(served.path), load_external_data=False).graph
    inputs = list(graph.input)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1_000_003])
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["ids_f", "shape"], ["logits"]),
    ]
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)
    model = helper.make_model(
        helper.make_graph(nodes, "broken", inputs, [logits], initializer=[shape]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    onnx.save(model, str(served.path))
    manifest = read_manifest(version_dir)
    relative = str(served.path.relative_to(version_dir))
    manifest.artifacts = [
        describe_file(version_dir, relative, a.format) if a.path == relative else a
        for a in manifest.artifacts
    ]
    write_manifest(version_dir, manifest)


@pytest.fixture(scope="module")
def server(
    published: HostingSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    repository = tmp_path_factory.mktemp("failing-repo")
    settings = on_free_ports(published, registry={"model_repository": repository}, exit_timeout_s=2)
    for version in ("1", "2"):
        shutil.copytree(
            published.registry.model_repository / "gen" / version, repository / "gen" / version
        )
    _break(repository / "gen" / "2", settings.engine.artifact)
    write_model_config(repository, "gen", [1, 2], settings.engine, settings.triton)
    with server_for(settings, ["gen"]) as running:
        yield running


def _ready(client: grpcclient.InferenceServerClient, version: str) -> bool:
    try:
        return bool(client.is_model_ready("gen", version))
    except InferenceServerException:
        return False


def test_a_dead_engine_fails_its_requests_and_takes_its_version_out_of_service(
    server: TritonServer,
) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert _ready(client, "1")
    assert _ready(client, "2"), "the broken graph loads; it fails only when it runs"

    async def together() -> list[BaseException | object]:
        calls = [
            _generate(server.grpc_url, f"def f{i}():", version="2", max_tokens=8) for i in range(3)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    failures = asyncio.run(together())
    assert all(isinstance(f, InferenceServerException) for f in failures), failures
    assert all("the generation engine failed" in str(f) for f in failures), failures

    deadline = time.monotonic() + 60
    while _ready(client, "2"):
        assert time.monotonic() < deadline, "the dead version still reports ready"
        time.sleep(0.2)
    with pytest.raises(InferenceServerException):
        asyncio.run(_generate(server.grpc_url, "def", version="2", max_tokens=3))

    # The model's healthy version kept serving, and still does.
    assert _ready(client, "1")
    ok = asyncio.run(_generate(server.grpc_url, "def", version="1", max_tokens=5))
    assert ok.completion_tokens >= 1
