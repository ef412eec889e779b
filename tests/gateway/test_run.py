"""`python -m gateway run` (what `make run` starts): Triton and the gateway on the embedded
defaults, a token and a `curl` command that work as printed, and SIGTERM stops both."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from hosting.config import HostingSettings
from tests.published import ROOT, TRITON_CACHE, free_port


def test_run_prints_a_token_and_a_curl_that_work_then_stops_everything(
    published: HostingSettings, tmp_path: Path
) -> None:
    shutil.copytree(
        published.registry.var_dir, tmp_path / "var", ignore=shutil.ignore_patterns("triton")
    )
    shutil.copytree(published.registry.model_repository, tmp_path / "repo")
    port, http, grpc, metrics = free_port(), free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "TOLLGATE_VAR_DIR": str(tmp_path / "var"),
        "TOLLGATE_MODEL_REPOSITORY": str(tmp_path / "repo"),
        "TOLLGATE_DATABASE_URL": "",
        "TOLLGATE_REDIS_URL": "",
        "TOLLGATE_TRITON_HOME": str(TRITON_CACHE),
        "TOLLGATE_PORT": str(port),
        "TOLLGATE_TRITON_HTTP_PORT": str(http),
        "TOLLGATE_TRITON_GRPC_PORT": str(grpc),
        "TOLLGATE_TRITON_METRICS_PORT": str(metrics),
        "TOLLGATE_DEFAULT_MODEL": "gen",
        "COLUMNS": "80",
    }
    log = tmp_path / "run.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run"],
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 180
            curl = ""
            while not curl:
                assert process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                lines = log.read_text().splitlines()
                curl = next((line for line in lines if line.startswith("curl -s ")), "")
                time.sleep(0.2)
            while True:  # the gateway starts serving just after it prints the example
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).is_success:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            answered = subprocess.run(
                ["bash", "-c", curl], capture_output=True, text=True, timeout=60, check=False
            )
            assert answered.returncode == 0, answered.stderr
            body = json.loads(answered.stdout)
            assert body["model"] == "gen"
            assert body["version"] == 1, "production"
            assert body["completion"]
            assert body["usage"]["completion_tokens"] >= 1

            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=90) == 0, log.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    printed = log.read_text()
    assert "An access token (generate, admin" in printed
    assert "stopping Triton" in printed
    for stopped in (port, http):
        try:
            httpx.get(f"http://127.0.0.1:{stopped}/", timeout=1)
        except httpx.TransportError:
            continue
        raise AssertionError(f"something still answers on port {stopped} after SIGTERM")
