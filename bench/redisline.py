"""The admission script through redis-py and through `gateway.server.redisline.RedisLine`.

Each runs the rate limiter's real admission script (`gateway.generation.ratelimit`) against the same
Redis, bounded by a timeout the way the gateway bounds it, in alternating rounds, with 1 and 16
callers at once: redis-py inside `asyncio.timeout`; a line inside `asyncio.timeout` (a timer
per call); and a line keeping its commands' deadlines itself (one timer for the connection),
which is how the gateway calls it. The table gives this process's CPU time per call (what the
gateway would spend on it) and the wall time per call. Redis shares the machine, so compare
within a run.

    python -m bench.redisline [--redis redis://127.0.0.1:6379/14] [--calls 3000] [--rounds 3]
        [--plot PATH]   # default: <var_dir>/bench/redisline.png
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from bench.plot import figure
from gateway.generation.ratelimit import _TAKE_SCRIPT
from gateway.server.redisline import RedisLine
from registry.config import RegistrySettings

console = Console()
CLIENTS = ("redis-py", "line+timer", "line")
TIMEOUT_S = 1.0  # the gateway's default `redis_timeout_s`


async def _round(
    call: Callable[[str], Awaitable[Any]], callers: int, calls: int
) -> tuple[float, float]:
    """CPU and wall seconds per call, `calls` calls spread over `callers` at once."""
    each = max(1, calls // callers)

    async def caller(bucket: str) -> None:
        for _ in range(each):
            await call(bucket)

    buckets = [f"bench-{uuid.uuid4().hex}" for _ in range(callers)]
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(b) for b in buckets))
    total = each * callers
    return (time.process_time() - cpu) / total, (time.perf_counter() - wall) / total


async def measure(
    url: str, calls: int, rounds: int
) -> dict[tuple[str, int], list[tuple[float, float]]]:
    client = Redis.from_url(url, socket_timeout=None)
    line = RedisLine.for_client(client, TIMEOUT_S)
    timed_line = RedisLine.for_client(client)  # no deadlines of its own
    if line is None or timed_line is None:
        raise SystemExit(f"{url}: a line cannot follow these settings")
    script, registered = _TAKE_SCRIPT, client.register_script(_TAKE_SCRIPT.source)
    args: list[str | int | float] = [10**9, 1000.0, 10**9, 1000.0, 32, ""]

    def keys(bucket: str) -> list[str]:
        return [f"{bucket}:requests", f"{bucket}:tokens", "bench:revoked"]

    async def through_redis_py(bucket: str) -> Any:
        async with asyncio.timeout(TIMEOUT_S):
            return await registered(keys=keys(bucket), args=args)

    async def through_timed_line(bucket: str) -> Any:
        async with asyncio.timeout(TIMEOUT_S):
            return await timed_line.evalsha(script, keys(bucket), args)

    async def through_line(bucket: str) -> Any:
        return await line.evalsha(script, keys(bucket), args)

    systems = {
        "redis-py": through_redis_py,
        "line+timer": through_timed_line,
        "line": through_line,
    }
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    try:
        for callers in (1, 16):
            for warm in systems.values():  # warm-up: connections made, script loaded
                await _round(warm, callers, 100)
            for _ in range(rounds):
                for name, call in systems.items():
                    results.setdefault((name, callers), []).append(
                        await _round(call, callers, calls)
                    )
    finally:
        await line.close()
        await timed_line.close()
        await client.aclose()
    return results


def report(results: dict[tuple[str, int], list[tuple[float, float]]]) -> Table:
    table = Table(title="admission script: CPU of this process and wall time, per call")
    for column in ("callers", "client", "CPU µs/call", "wall µs/call", "CPU vs redis-py"):
        table.add_column(column, justify="right")
    for callers in (1, 16):
        base = statistics.median(cpu for cpu, _ in results[("redis-py", callers)])
        for name in CLIENTS:
            runs = results[(name, callers)]
            cpu = statistics.median(c for c, _ in runs)
            wall = statistics.median(w for _, w in runs)
            table.add_row(
                str(callers), name, f"{cpu * 1e6:.1f}", f"{wall * 1e6:.1f}", f"{cpu / base:.2f}x"
            )
    return table


def save_plot(results: dict[tuple[str, int], list[tuple[float, float]]], path: Path) -> None:
    """CPU µs per call of each client, at 1 and 16 callers, as bars."""
    with figure(path, 1, size=(7, 4)) as (axis,):
        width = 0.8 / len(CLIENTS)
        for i, name in enumerate(CLIENTS):
            cpu = [statistics.median(c for c, _ in results[(name, n)]) * 1e6 for n in (1, 16)]
            axis.bar([x + i * width for x in (0, 1)], cpu, width, label=name)
        axis.set_xticks([x + width for x in (0, 1)], ["1 caller", "16 callers"])
        axis.set(ylabel="CPU µs per admission call", title="admission script, by client")
        axis.grid(True, axis="y", alpha=0.3)
        axis.legend()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redisline")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--calls", type=int, default=3000, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plot", type=Path, help="default: <var_dir>/bench/redisline.png")
    args = parser.parse_args()
    try:
        results = uvloop.run(measure(args.redis, args.calls, args.rounds))
    except (OSError, RedisError) as exc:
        raise SystemExit(f"cannot reach Redis at {args.redis}: {exc}") from None
    console.print(report(results))
    plot = args.plot or RegistrySettings().var_dir / "bench" / "redisline.png"
    save_plot(results, plot)
    console.print(f"plot: {plot}")


if __name__ == "__main__":
    main()
