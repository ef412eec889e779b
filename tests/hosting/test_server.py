"""A real tritonserver from the cached wheel: starts, serves, stops, and explains failures."""

from __future__ import annotations

import json
import site
import urllib.request
from pathlib import Path

import pytest

from hosting.binary import TritonInstall, TritonUnavailable, ensure_tritonserver
from hosting.config import HostingSettings
from hosting.server import TritonServer, TritonStartError

ECHO_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

ECHO_MODEL = """
import sys
sys.path[:0] = {paths!r}
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            out = pb_utils.Tensor("OUT", np.ascontiguousarray(x * 2, dtype=np.float32))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
"""


def _write_model(repo: Path, name: str, source: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(ECHO_CONFIG)
    (repo / name / "1" / "model.py").write_text(source)


def _infer(url: str) -> list[float]:
    body = {"inputs": [{"name": "IN", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]}
    request = urllib.request.Request(  # noqa: S310
        f"{url}/v2/models/echo/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        outputs = json.loads(response.read())["outputs"]
    data: list[float] = outputs[0]["data"]
    return data


def test_serves_a_python_model_and_stops_cleanly(
    triton_install: TritonInstall, hosting_settings: HostingSettings
) -> None:
    repo = hosting_settings.registry.model_repository
    _write_model(repo, "echo", ECHO_MODEL.format(paths=site.getsitepackages()))
    server = TritonServer(
        install=triton_install,
        settings=hosting_settings.triton,
        repository=repo,
        log_path=hosting_settings.triton_path / "logs" / "tritonserver.log",
        models=["echo"],
    )
    with server:
        assert server.is_ready()
        assert _infer(server.http_url) == [2.0, 4.0, 6.0]
    assert not server.is_ready()
    assert server.log_path.is_file()


def test_a_model_that_fails_to_load_is_reported_with_the_log(
    triton_install: TritonInstall, hosting_settings: HostingSettings
) -> None:
    repo = hosting_settings.registry.model_repository
    _write_model(repo, "echo", "raise RuntimeError('weights are corrupt')\n")
    server = TritonServer(
        install=triton_install,
        settings=hosting_settings.triton,
        repository=repo,
        log_path=hosting_settings.triton_path / "logs" / "tritonserver.log",
        models=["echo"],
    )
    with pytest.raises(TritonStartError, match="weights are corrupt"):
        server.start()
    server.stop()


def test_a_broken_binary_gives_one_clear_message(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "nvidia_pytriton-0.7.0-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(TritonUnavailable, match=r"not a usable wheel.*delete it and retry"):
        ensure_tritonserver(tmp_path, "0.7.0")
