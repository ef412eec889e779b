"""The benchmarks say what to do when there is nothing to measure, without a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from tritonclient.grpc import service_pb2

from bench.floor import Floor
from bench.gateway import Round, Usage, _cpu, _machine_cpu, _redis_cpu, _tree_cpu, cpu_report
from bench.generation import bench_engine
from hosting.config import HostingSettings
from registry import migrate
from registry.config import RegistrySettings
from registry.db import connect
from tests.cli import run_module
from tests.published import ROOT
from tests.services import POSTGRES_URL, REDIS_URL
from tests.workers.fakes import CharTokenizer, FakeDecoder
from workers.engine import Engine, EngineConfig


@pytest.mark.parametrize(
    ("module", "args"), [("bench.gateway", ["--only-echo"]), ("bench.generation", [])]
)
@pytest.mark.parametrize("migrated", [False, True], ids=["no-registry", "empty-registry"])
def test_a_benchmark_without_a_trained_model_says_how_to_get_one(
    tmp_path: Path, module: str, args: list[str], migrated: bool
) -> None:
    env = {
        **os.environ,
        "TOLLGATE_VAR_DIR": str(tmp_path),
        "TOLLGATE_DATABASE_URL": "",
        "TOLLGATE_MODEL_REPOSITORY": str(tmp_path / "models"),
    }
    if migrated:
        db = connect(RegistrySettings(var_dir=tmp_path, database_url=""))
        migrate.upgrade(db)
        db.dispose()
    done = run_module(module, "--model", "code-gpt", *args, env=env)
    assert done.returncode == 1, done.stderr
    assert "python -m trainer run --preset tiny --model code-gpt" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_engine_alone_is_measured_like_the_server() -> None:
    engine = Engine(decoder=FakeDecoder(), tokenizer=CharTokenizer(), config=EngineConfig(lanes=2))
    engine.start()
    try:
        m = bench_engine(engine, ["abc", "hello there", "x"], max_tokens=12)
    finally:
        engine.stop()
    assert (m.system, m.concurrency, m.tokens) == ("engine", 3, 36)
    assert len(m.ttft_s) == 3
    assert len(m.itl_s) == 3 * 11, "every token after the first has an inter-token time"
    assert m.wall_s > 0


def test_the_floor_forwards_the_gateways_request_and_answers_the_completion() -> None:

    sent: list[Any] = []

    class Endpoint:
        async def stream(
            self, request: Any, timeout_s: float
        ) -> AsyncIterator[service_pb2.ModelInferResponse]:
            sent.append(request)
            for text in ("def ", "add"):
                response = service_pb2.ModelInferResponse(model_name="gen", model_version="3")
                response.outputs.add(name="text_output", datatype="BYTES", shape=[1])
                response.raw_output_contents.append(struct.pack("<I", len(text)) + text.encode())
                yield response

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        floor = Floor("unused")
        floor.endpoint = Endpoint()  # type: ignore[assignment]
        transport = httpx.ASGITransport(app=floor)
        async with httpx.AsyncClient(transport=transport, base_url="http://floor") as client:
            good = await client.post(
                "/generate",
                content=json.dumps(
                    {"model": "gen", "version": 3, "prompt": "x", "max_tokens": 4}
                ).encode(),
            )
            bad = await client.post("/generate", content=b"{}")
        return good, bad

    good, bad = asyncio.run(scenario())
    assert (good.status_code, good.json()) == (200, {"completion": "def add"})
    assert (sent[0].model_name, sent[0].model_version) == ("gen", "3")
    assert bad.status_code == 400
    assert "bad request" in bad.json()["error"]


_SPIN = """
import time
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print("spun", flush=True)
time.sleep(60)
"""


def test_a_process_trees_cpu_time_counts_what_its_children_spend() -> None:
    """Triton's CPU time is mostly its python-backend stubs', child processes of it."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {_SPIN!r}])",
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline() == b"spun\n"
        assert _tree_cpu(parent.pid) >= _cpu(parent.pid) + 0.29
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
        assert parent.stdout is not None
        parent.stdout.close()
    assert _tree_cpu(parent.pid) == 0.0, "a process that is gone counts nothing"


def test_the_machines_busy_time_grows_with_the_work_done_on_it() -> None:
    before = _machine_cpu()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert _machine_cpu() - before >= 0.25  # everything else on the machine only adds


@pytest.mark.redis
def test_redis_reports_its_cpu_time_and_an_absent_redis_reports_none() -> None:
    with redis.Redis.from_url(REDIS_URL, socket_timeout=2) as client:
        first = _redis_cpu(client)
        assert first is not None
        assert first > 0
        for _ in range(2000):
            client.ping()
        second = _redis_cpu(client)
        assert second is not None
        assert second > first
    with redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1) as absent:
        assert _redis_cpu(absent) is None


def test_the_cpu_table_adds_up_each_systems_share_per_request() -> None:
    def made(system: str, redis_s: float | None) -> Round:
        serving = 0.0 if system == "direct" else 0.4
        used = Usage(serving=serving, client=0.2, triton=0.5, redis=redis_s, machine=3.0)
        return Round("echo", system, 16, latencies=[0.01] * 1000, wall_s=2.0, used=used)

    results = [made("direct", 0.0), made("gateway", 0.05), made("floor", None)]
    table = cpu_report(results, [16], [("echo", 1)])
    rows = list(zip(*(column.cells for column in table.columns), strict=True))
    assert rows == [
        ("echo", "16", "direct", "0.20", "-", "0.50", "0.00", "0.70", "3.00", "1.50"),
        ("echo", "16", "gateway", "0.20", "0.40", "0.50", "0.05", "1.15", "3.00", "1.50"),
        ("echo", "16", "floor", "0.20", "0.40", "0.50", "-", "1.10", "3.00", "1.50"),
    ]


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is `pid`: {pid: command name}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm, rest = (entry / "stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        if int(rest.split()[1]) == pid:
            found[int(entry.name)] = comm.split("(", 1)[1]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.redis
def test_a_benchmark_stopped_with_sigterm_stops_the_servers_it_started(
    published: HostingSettings, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "TOLLGATE_VAR_DIR": str(published.registry.var_dir),
        "TOLLGATE_DATABASE_URL": published.registry.database_url,
        "TOLLGATE_MODEL_REPOSITORY": str(published.registry.model_repository),
        "TOLLGATE_TRITON_HOME": str(published.triton_path),
        "TMPDIR": str(tmp_path),  # where the benchmark makes its throw-away registry
    }
    command = ["bench.gateway", "--model", "gen", "--only-echo", "--concurrency", "1"]
    log = (tmp_path / "bench.log").open("wb")
    bench = subprocess.Popen(
        [sys.executable, "-m", *command, "--requests", "100000", "--rounds", "100"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    started: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and bench.poll() is None:
            started = _children(bench.pid)
            if {"tritonserver", "python"} <= set(started.values()) and len(started) >= 3:
                break  # Triton, the gateway and the floor are up
            time.sleep(0.5)
        assert bench.poll() is None, (tmp_path / "bench.log").read_text()
        assert "tritonserver" in started.values(), f"servers not started: {started}"
        time.sleep(2)  # the rounds are running
        bench.send_signal(signal.SIGTERM)
        bench.wait(60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in started):
            time.sleep(0.2)
        left = {pid: name for pid, name in started.items() if _alive(pid)}
        assert not left, f"still running after the benchmark was stopped: {left}"
        assert bench.returncode == 128 + signal.SIGTERM
        assert not list(tmp_path.glob("tollgate-bench-*")), "its throw-away registry is left"
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for pid in started:  # a failed run leaves nothing behind either
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()


def test_the_redis_benchmark_says_when_redis_is_unreachable() -> None:
    done = run_module("bench.redisline", "--redis", "redis://127.0.0.1:9/0", env=dict(os.environ))
    assert done.returncode == 1, done.stderr
    assert "cannot reach Redis at redis://127.0.0.1:9/0" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.redis
def test_the_redis_benchmark_prints_each_client_at_1_and_16_callers(tmp_path: Path) -> None:
    plot = tmp_path / "redisline.png"
    done = run_module(
        "bench.redisline",
        "--redis",
        REDIS_URL,
        "--calls",
        "64",
        "--rounds",
        "1",
        "--plot",
        str(plot),
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    assert plot.read_bytes().startswith(b"\x89PNG")
    rows = [row.split("│")[1:3] for row in done.stdout.splitlines() if row.startswith("│")]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["1", "redis-py"],
        ["1", "line+timer"],
        ["1", "line"],
        ["16", "redis-py"],
        ["16", "line+timer"],
        ["16", "line"],
    ], done.stdout


@pytest.mark.postgres
def test_the_routing_benchmark_reads_each_registry_in_a_fixed_number_of_queries(
    tmp_path: Path,
) -> None:
    plot = tmp_path / "routes.png"
    done = run_module(
        "bench.routes", "--models", "1,3", "--reads", "2", "--postgres", POSTGRES_URL,
        "--plot", str(plot), env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert plot.read_bytes().startswith(b"\x89PNG")
    rows = [row.split("│") for row in done.stdout.splitlines() if row.startswith("│")]
    # Database, models, then the statements of a routing read and of the reconciler's read
    # (SQLite also counts its BEGIN).
    assert [[row[i].strip() for i in (1, 2, 3, 6)] for row in rows] == [
        ["sqlite", "1", "4", "5"],
        ["sqlite", "3", "4", "5"],
        ["postgresql", "1", "3", "4"],
        ["postgresql", "3", "3", "4"],
    ], done.stdout
