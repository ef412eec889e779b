"""`python -m hosting serve` (also `python -m workers serve`): starts Triton on the registry's
versions and stops gracefully; `configure` only writes the model configurations."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc.aio import InferenceServerClient

from hosting.config import HostingSettings
from registry.config import RegistrySettings
from tests.cli import run_module
from tests.published import ROOT, TRITON_CACHE, free_port


def _env(settings: HostingSettings, ports: tuple[int, int, int]) -> dict[str, str]:
    return {
        **os.environ,
        "TOLLGATE_VAR_DIR": str(settings.registry.var_dir),
        "TOLLGATE_MODEL_REPOSITORY": str(settings.registry.model_repository),
        "TOLLGATE_DATABASE_URL": settings.registry.database_url,
        "TOLLGATE_TRITON_HOME": str(TRITON_CACHE),
        "TOLLGATE_TRITON_HTTP_PORT": str(ports[0]),
        "TOLLGATE_TRITON_GRPC_PORT": str(ports[1]),
        "TOLLGATE_TRITON_METRICS_PORT": str(ports[2]),
        "TOLLGATE_TRITON_EXIT_TIMEOUT_S": "20",
        "TOLLGATE_WORKER_TOKENS_PER_RESPONSE": "1",
    }


async def _long_request(url: str, started: asyncio.Event) -> str:
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"def"], dtype=np.object_))
    limit = grpcclient.InferInput("max_tokens", [1], "INT32")
    limit.set_data_from_numpy(np.array([200], dtype=np.int32))

    async def one() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": "gen", "model_version": "2", "inputs": [text, limit]}

    async with InferenceServerClient(url) as client:
        async for result, error in client.stream_infer(inputs_iterator=one()):
            if error is not None:
                raise error
            started.set()
            outcome = result.as_numpy("finish_reason")  # only the final response has it
            if outcome is not None:
                return str(outcome[0].decode())
    return "stream ended without a final response"


def test_serve_answers_then_lets_in_flight_requests_finish_on_sigterm(
    published: HostingSettings, tmp_path: Path
) -> None:
    ports = (free_port(), free_port(), free_port())
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        serve = subprocess.Popen(
            [sys.executable, "-m", "hosting", "serve"],
            env=_env(published, ports),
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "Triton ready" not in log.read_text():
            assert serve.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert "serving gen versions [1, 2]" in log.read_text()

        async def scenario() -> str:
            started = asyncio.Event()
            request = asyncio.create_task(_long_request(f"127.0.0.1:{ports[1]}", started))
            await asyncio.wait_for(started.wait(), 30)
            serve.send_signal(signal.SIGTERM)  # mid-stream
            return await asyncio.wait_for(request, 60)

        assert asyncio.run(scenario()) in {"length", "eos"}
        assert serve.wait(60) == 0
        assert "stopping" in log.read_text()
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


def test_serve_without_a_ready_version_says_what_to_do(tmp_path: Path) -> None:
    registry = RegistrySettings(var_dir=tmp_path / "var", model_repository=tmp_path / "repo")
    settings = HostingSettings(registry=registry)
    env = _env(settings, (free_port(), free_port(), free_port()))
    init = run_module("registry", "init", env=env)
    assert init.returncode == 0
    done = run_module("hosting", "serve", env=env)
    assert done.returncode == 1
    assert "no model has a ready version to serve: run `python -m trainer run` first" in done.stderr


def test_configure_writes_the_configuration_a_triton_elsewhere_loads(
    published: HostingSettings,
) -> None:
    env = _env(published, (free_port(), free_port(), free_port()))
    config = published.registry.model_repository / "gen" / "config.pbtxt"
    config.unlink(missing_ok=True)
    done = run_module("workers", "configure", "--model", "gen", env=env)
    assert done.returncode == 0, done.stderr
    assert "gen: versions [1, 2]" in done.stdout
    text = config.read_text()
    assert 'backend: "python"' in text
    assert "versions: [ 1, 2 ]" in text
    unknown = run_module("workers", "configure", "--model", "nosuch", env=env)
    assert unknown.returncode == 1
    assert "no servable versions for ['nosuch']" in unknown.stderr
