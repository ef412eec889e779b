"""What the gateway adds: Triton called directly vs through the gateway, interleaved, one run.

The same non-streamed requests go to the same Triton three ways: straight over gRPC (the
gateway's own Triton client, `gateway.triton.pool.Endpoint`, on kept streams); over HTTP
(`aiohttp`, a lean load generator) through a gateway process with everything on (JWT auth, the
Redis rate limit when Redis answers, metrics, and its JSON access line per request at the
default log level, written to `var/bench/gateway.log`); and over HTTP through `bench.floor`, the
least a Python gateway can do (the same server stack and Triton client, no features), which
splits what the gateway adds into the HTTP-to-gRPC hop itself and the gateway's features.
Rounds alternate between the three, at concurrency 1, 16 and 64, against an instant echo model
(so the difference is the gateway's) and against the real model. It prints requests/s,
p50/p99 latency, what the gateway and the floor add at p50/p99, each process's CPU time per
request (from /proc) and the load generator's own, then a second table of where the machine's
CPU goes per request (load generator, gateway or floor, Triton with its python-backend stubs,
Redis by its own account, the whole machine from /proc/stat, and how many cores were busy),
and saves a plot. Usage:

    python -m bench.gateway --model code-gpt --concurrency 1,16,64 --requests 200

`--only-echo` skips the real model; `BENCH_GATEWAY_PREFIX="-m cProfile -o gw.prof"` runs the
gateway under a profiler.
"""

from __future__ import annotations

from gateway.triton.grpc_setup import load_grpc

load_grpc()  # as `python -m gateway` does: gRPC's client setting, before tritonclient loads it

import argparse
import asyncio
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
import redis
from rich.console import Console
from rich.table import Table

from bench import stop_cleanly_on_sigterm
from bench.plot import figure
from bench.registry import newest_ready
from gateway.config import GatewaySettings
from gateway.identity.tokens import TokenService
from gateway.triton.pool import Endpoint
from gateway.triton.protocol import GenerateCall, infer_request
from hosting.cli import server_for
from hosting.model_config import write_model_config
from registry import aliases, migrate
from registry.config import RegistrySettings
from registry.db import connect, writing
from registry.integrity import rebuild_from_repository
from registry.manifest import DatasetRecord, Manifest, describe_file, write_manifest
from registry.tables import utcnow

ECHO_ENTRY = '''"""Triton entry point of the benchmark's echo model."""

import os
import sys

sys.path[:0] = [p for p in os.environ.get("TOLLGATE_PYTHONPATH", "").split(os.pathsep) if p]

from bench.echo_model import TritonPythonModel  # noqa: E402

__all__ = ["TritonPythonModel"]
'''


SYSTEMS = ("direct", "gateway", "floor")


@dataclass
class Usage:
    """CPU time (s) of everything a round makes work: so far, or spent in a round."""

    serving: float = 0.0  # the gateway's or the floor's
    client: float = 0.0  # this process's (the load generator's)
    triton: float = 0.0  # tritonserver's and its python-backend stubs'
    redis: float | None = 0.0  # the Redis server's (None: it did not answer)
    machine: float = 0.0  # every core's busy time, whatever ran on it

    @staticmethod
    def now(endpoints: dict[str, Any], serving_pid: int) -> Usage:
        return Usage(
            serving=_cpu(serving_pid),
            client=time.process_time(),
            triton=_tree_cpu(endpoints["triton_pid"]),
            redis=_redis_cpu(endpoints["redis"]),
            machine=_machine_cpu(),
        )

    def _combine(self, other: Usage, sign: int) -> Usage:
        redis = (
            None if self.redis is None or other.redis is None else self.redis + sign * other.redis
        )
        return Usage(
            serving=self.serving + sign * other.serving,
            client=self.client + sign * other.client,
            triton=self.triton + sign * other.triton,
            redis=redis,
            machine=self.machine + sign * other.machine,
        )

    def __add__(self, other: Usage) -> Usage:
        return self._combine(other, 1)

    def __sub__(self, other: Usage) -> Usage:
        return self._combine(other, -1)


@dataclass
class Round:
    target: str
    system: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    used: Usage = field(default_factory=Usage)  # CPU time spent in this round

    def per_request_ms(self, seconds: float | None) -> str:
        return "-" if seconds is None else f"{seconds / len(self.latencies) * 1000:.2f}"

    def cores_busy(self) -> str:
        return f"{self.used.machine / self.wall_s:.2f}"

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000

    def rate(self) -> str:
        return f"{len(self.latencies) / self.wall_s:,.0f}"

    def cpu_ms(self) -> str:
        """The serving process's CPU time per request."""
        return self.per_request_ms(self.used.serving)

    def client_cpu_ms(self) -> str:
        return self.per_request_ms(self.used.client)


def build(settings: GatewaySettings, model: str, work: Path) -> tuple[GatewaySettings, int]:
    """A registry and repository in `work` holding the echo model and `model`'s newest version."""
    newest = newest_ready(settings.registry, model)
    repo = work / "repo"
    (repo / model).mkdir(parents=True)
    (repo / model / str(newest)).symlink_to(
        settings.registry.model_repository / model / str(newest)
    )
    echo = repo / "echo" / "1"
    echo.mkdir(parents=True)
    (echo / "model.py").write_text(ECHO_ENTRY)
    write_manifest(
        echo,
        Manifest(
            model="echo",
            version=1,
            created_at=utcnow(),
            dataset=DatasetRecord(sha256="0" * 64),
            hyperparameters={"model": {"context_length": 4096}},
            artifacts=[describe_file(echo, "model.py", "python")],
        ),
    )
    registry = RegistrySettings(
        var_dir=work / "var",
        model_repository=repo,
        database_url=f"sqlite:///{work / 'registry.db'}",
    )
    triton = settings.triton.model_copy(
        update={
            "home": settings.triton_path,
            "http_port": free_port(),
            "grpc_port": free_port(),
            "metrics_port": free_port(),
        }
    )
    engine = settings.engine.model_copy(update={"max_active": 64, "max_queue": 256})
    local = settings.model_copy(
        update={"registry": registry, "triton": triton, "engine": engine, "port": free_port()}
    )
    db = connect(local.registry)
    migrate.upgrade(db)
    with writing(db) as session:
        rebuild_from_repository(session=session, repository=repo)
        for name, version in (("echo", 1), (model, newest)):
            aliases.set_alias(
                session=session,
                model=name,
                alias="production",
                version=version,
                actor="bench",
                reason="benchmark",
            )
    db.dispose()
    write_model_config(repo, "echo", [1], engine, triton)
    write_model_config(repo, model, [newest], engine, triton)
    return local, newest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int) -> float:
    """CPU time of a process and its live descendants (Triton and its python-backend stubs)."""
    try:
        total = _cpu(pid)
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except OSError:  # it exited meanwhile
        return 0.0
    return total + sum(_tree_cpu(child) for child in children)


def _machine_cpu() -> float:
    """CPU time all of this machine's cores have spent busy (/proc/stat: user, nice, system,
    irq and softirq; not idle, I/O wait, or time the hypervisor gave to other guests)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _redis_cpu(client: redis.Redis) -> float | None:
    """The Redis server's own CPU time, as it reports it; None if it does not answer."""
    try:
        info = client.info("cpu")
    except (redis.RedisError, OSError):
        return None
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def run_round(
    kind: str, target: tuple[str, int], level: int, count: int, endpoints: dict[str, Any]
) -> Round:
    model, version = target
    result = Round(model, kind, level)
    body: dict[str, Any] = {"prompt": "def add(a, b):", "max_tokens": 16, "temperature": 0.8}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    http = aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {endpoints['token']}"},
        connector=aiohttp.TCPConnector(limit=level),
        timeout=aiohttp.ClientTimeout(total=120),
    )
    triton = Endpoint(endpoints["grpc"])

    call = GenerateCall(
        model=model,
        version=version,
        prompt=body["prompt"],
        max_tokens=body["max_tokens"],
        temperature=body["temperature"],
        stream=False,
    )

    async def direct() -> float:
        start = time.perf_counter()
        request = infer_request(call)  # the request the gateway sends, on the same kind of stream
        async for _ in triton.stream(request, timeout_s=120):
            pass
        return time.perf_counter() - start

    # Over HTTP: the gateway routes by model; the floor is told the version too.
    url = endpoints["gateway"] + "/v1/generate" if kind == "gateway" else endpoints["floor"]
    fields = {"model": model} if kind == "gateway" else {"model": model, "version": version}
    payload = json.dumps({**body, **fields}).encode()

    async def over_http() -> float:
        start = time.perf_counter()
        async with http.post(
            url, data=payload, headers={"Content-Type": "application/json"}
        ) as answer:
            answer.raise_for_status()
            await answer.read()
        return time.perf_counter() - start

    send = direct if kind == "direct" else over_http

    async def worker() -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            result.latencies.append(await send())

    pid = endpoints["floor_pid"] if kind == "floor" else endpoints["gateway_pid"]
    try:
        before, started = Usage.now(endpoints, pid), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(level)))
        result.wall_s = time.perf_counter() - started
        result.used = Usage.now(endpoints, pid) - before
    finally:
        # Also when the round is cancelled (SIGTERM): a gRPC stream left open would hold
        # Triton's shutdown for its whole exit timeout.
        await http.close()
        await triton.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway")
    parser.add_argument("--model", default="code-gpt")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--requests", type=int, default=200, help="per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per system")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--only-echo", action="store_true", help="skip the real model")
    parser.add_argument("--plot", type=Path, help="default: <var_dir>/bench/gateway.png")
    args = parser.parse_args()
    stop_cleanly_on_sigterm()
    console = Console(width=230)
    base = GatewaySettings()
    levels = [int(c) for c in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    try:
        results, targets = _measure(args, base, levels, work, console)
    finally:  # also when stopped (SIGTERM) or failed
        shutil.rmtree(work, ignore_errors=True)
    console.print(report(results, levels, targets))
    console.print(cpu_report(results, levels, targets))
    plot = args.plot or base.registry.var_dir / "bench" / "gateway.png"
    save_plot(results, levels, plot)
    console.print(f"plot: {plot}")


def _measure(
    args: argparse.Namespace,
    base: GatewaySettings,
    levels: list[int],
    work: Path,
    console: Console,
) -> tuple[list[Round], list[tuple[str, int]]]:
    """Start Triton, the gateway and the floor on a registry built in `work`, and run the
    rounds; every server is stopped however this ends."""
    settings, version = build(base, args.model, work)
    settings = settings.model_copy(
        update={
            "redis_url": args.redis,
            "cache_ttl_s": 0,
            "rate_requests_capacity": 10**9,
            "rate_tokens_capacity": 10**9,
        }
    )
    token, _ = TokenService(settings).issue(subject="bench", scopes=frozenset({"generate"}))
    env = {
        **os.environ,
        "TOLLGATE_VAR_DIR": str(settings.registry.var_dir),
        "TOLLGATE_DATABASE_URL": settings.registry.database_url,
        "TOLLGATE_MODEL_REPOSITORY": str(settings.registry.model_repository),
        "TOLLGATE_TRITON_GRPC_PORT": str(settings.triton.grpc_port),
        "TOLLGATE_PORT": str(settings.port),
        "TOLLGATE_REDIS_URL": args.redis,
        "TOLLGATE_CACHE_TTL_S": "0",
        "TOLLGATE_RATE_REQUESTS_CAPACITY": str(10**9),
        "TOLLGATE_RATE_TOKENS_CAPACITY": str(10**9),
    }
    results: list[Round] = []
    prefix = os.environ.get("BENCH_GATEWAY_PREFIX", "").split()
    # The gateway logs as it does by default (an access line per request, at info), to a file.
    log_path = base.registry.var_dir / "bench" / "gateway.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with server_for(settings.hosting, ["echo", args.model]) as triton, log_path.open("w") as log:
        gateway = subprocess.Popen(
            [sys.executable, *prefix, "-m", "gateway", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        floor_port, grpc = free_port(), triton.grpc_url
        floor = subprocess.Popen(
            [sys.executable, "-m", "bench.floor", "--port", str(floor_port), "--grpc", grpc],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        redis_stats = redis.Redis.from_url(args.redis, socket_timeout=2)  # its CPU time
        try:
            gateway_url = f"http://127.0.0.1:{settings.port}"
            floor_url = f"http://127.0.0.1:{floor_port}/generate"
            _wait_until_up(f"{gateway_url}/readyz", f"the gateway (its log: {log_path})", want=200)
            _wait_until_up(floor_url, "bench.floor", want=400)  # up: it refuses an empty body
            endpoints = {
                "gateway": gateway_url,
                "floor": floor_url,
                "grpc": triton.grpc_url,
                "token": token,
                "gateway_pid": gateway.pid,
                "floor_pid": floor.pid,
                "triton_pid": triton.pid,
                "redis": redis_stats,
            }
            targets = [("echo", 1)] if args.only_echo else [("echo", 1), (args.model, version)]
            # The load generator's own full collections (about 40 ms each, everything waiting)
            # would land in whichever system's round happens to be running.
            gc.collect()
            gc.freeze()
            for target in targets:
                for level in levels:
                    count = args.requests if target[0] == "echo" else max(level, args.requests // 4)
                    for kind in SYSTEMS:  # warm-up
                        asyncio.run(run_round(kind, target, level, level, endpoints))
                    for _ in range(args.rounds):
                        for kind in SYSTEMS:
                            results.append(
                                asyncio.run(run_round(kind, target, level, count, endpoints))
                            )
                    console.print(f"{target[0]} at concurrency {level} done")
        finally:
            redis_stats.close()
            _stop(gateway, floor)
    return results, targets


def _stop(*processes: subprocess.Popen[bytes]) -> None:
    """SIGTERM to each at once, then wait; one that has not exited within 30 s is killed."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + 30
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(url: str, what: str, want: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == want:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not become ready")
        time.sleep(0.2)


def _merge(rounds: list[Round]) -> Round:
    merged = Round(rounds[0].target, rounds[0].system, rounds[0].concurrency)
    for r in rounds:
        merged.latencies += r.latencies
        merged.wall_s += r.wall_s
        merged.used += r.used
    return merged


def report(results: list[Round], levels: list[int], targets: list[tuple[str, int]]) -> Table:
    table = Table(
        "model",
        "concurrency",
        "direct req/s",
        "gateway req/s",
        "direct p50/p99 ms",
        "gateway p50/p99 ms",
        "added p50 ms",
        "added p99 ms",
        "gateway CPU ms/req",
        "floor req/s",
        "floor adds p50 / p99 ms",
        "floor CPU ms/req",
        "client CPU ms/req direct/gateway",
    )
    for model, _ in targets:
        for level in levels:
            rows = [r for r in results if r.target == model and r.concurrency == level]
            d = _merge([r for r in rows if r.system == "direct"])
            g = _merge([r for r in rows if r.system == "gateway"])
            f = _merge([r for r in rows if r.system == "floor"])
            table.add_row(
                model,
                str(level),
                d.rate(),
                g.rate(),
                f"{d.pct(50):.2f} / {d.pct(99):.2f}",
                f"{g.pct(50):.2f} / {g.pct(99):.2f}",
                f"{g.pct(50) - d.pct(50):.2f}",
                f"{g.pct(99) - d.pct(99):.2f}",
                g.cpu_ms(),
                f.rate(),
                f"{f.pct(50) - d.pct(50):.2f} / {f.pct(99) - d.pct(99):.2f}",
                f.cpu_ms(),
                f"{d.client_cpu_ms()} / {g.client_cpu_ms()}",
            )
    return table


def cpu_report(results: list[Round], levels: list[int], targets: list[tuple[str, int]]) -> Table:
    """Where the machine's CPU goes, per request, for each way of calling Triton: when the
    cores are all busy, requests/s (and so the waiting at a given concurrency) follows the
    total, not the serving process's share alone."""
    table = Table(
        "model",
        "concurrency",
        "system",
        "load generator",
        "gateway / floor",
        "Triton",
        "Redis",
        "the four",
        "whole machine",
        "cores busy",
        title="CPU ms per request",
    )
    for model, _ in targets:
        for level in levels:
            for system in SYSTEMS:
                r = _merge(
                    [
                        x
                        for x in results
                        if (x.target, x.concurrency, x.system) == (model, level, system)
                    ]
                )
                u = r.used
                serving = None if system == "direct" else u.serving
                four = u.client + u.triton + (serving or 0.0) + (u.redis or 0.0)
                table.add_row(
                    model,
                    str(level),
                    system,
                    r.per_request_ms(u.client),
                    r.per_request_ms(serving),
                    r.per_request_ms(u.triton),
                    r.per_request_ms(u.redis),
                    r.per_request_ms(four),
                    r.per_request_ms(u.machine),
                    r.cores_busy(),
                )
    return table


def save_plot(results: list[Round], levels: list[int], path: Path) -> None:
    targets = list(dict.fromkeys(r.target for r in results))
    with figure(path, len(targets), size=(5.5 * len(targets), 4)) as axes:
        for axis, model in zip(axes, targets, strict=True):
            for system in SYSTEMS:
                p50 = [
                    statistics.median(
                        x
                        for r in results
                        if (r.target, r.system, r.concurrency) == (model, system, level)
                        for x in r.latencies
                    )
                    * 1000
                    for level in levels
                ]
                axis.plot(levels, p50, marker="o", label=f"{system} p50")
            axis.set(
                title=model,
                xlabel="concurrency",
                ylabel="latency p50 (ms)",
                xscale="log",
                yscale="log",
            )
            axis.grid(True, alpha=0.3)
            axis.legend()


if __name__ == "__main__":
    main()
