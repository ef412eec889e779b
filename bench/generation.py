"""Generation throughput and latency through a real Triton, beside two references.

For each concurrency level, the same requests (greedy, `--max-tokens` new tokens each, all
arriving at once) are served three ways on the same weights, in one run, the first two
interleaved over `--rounds` rounds (tokens/s is all tokens over all the rounds' time; each
round's own ratio is shown as a range, since one round on a shared machine says little), and
the engine alone (`--skip-engine` leaves it out):

- triton:       `python -m workers`'s generate model in a real tritonserver, gRPC streaming
                with the gateway's own client (`gateway.triton.pool.Endpoint`, kept streams);
- engine:       the worker's engine in this process with no server (the lanes and threads the
                worker builds, responses handed to in-memory sinks), which splits the
                gap to the ceiling between the engine and the server around it;
- ort-batched:  ONNX Runtime's raw batched decode with no server: one prefill and one decode
                loop over the whole batch (the ceiling);
- transformers: Hugging Face `generate()` serving the requests one after another, as a
                straightforward server would.

It prints aggregate tokens/s, time to first token (p50, p99) and mean inter-token latency, and
saves a plot. Usage (settings from TOLLGATE_*; the model needs a ready version):

    python -m bench.generation --model code-gpt --concurrency 1,8,32,64 --max-tokens 64 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from tokenizers import Tokenizer

from bench import stop_cleanly_on_sigterm
from bench.plot import figure
from bench.registry import newest_ready
from gateway.triton.pool import Endpoint
from gateway.triton.protocol import GenerateCall, infer_request, parse_response
from hosting.cli import prepare, server_for
from hosting.config import HostingSettings
from hosting.model_config import model_parameters
from trainer.checkpoint import load_model
from trainer.export_hf import export_hf
from workers.artifacts import resolve
from workers.engine import Engine
from workers.kvbatch import KVBatch
from workers.requests import Chunk, GenerationRequest
from workers.runtime import OnnxDecoder
from workers.sampling import SamplingParams
from workers.serving import build_engine


@dataclass
class Measurement:
    system: str
    concurrency: int
    tokens: int = 0
    wall_s: float = 0.0
    ttft_s: list[float] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)
    rounds: list[float] = field(default_factory=list)  # each round's tokens/s

    def add(self, other: Measurement) -> None:
        """Fold one round into this total."""
        self.tokens += other.tokens
        self.wall_s += other.wall_s
        self.ttft_s += other.ttft_s
        self.itl_s += other.itl_s
        self.rounds.append(other.tokens_per_s)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0

    def pct(self, values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) * 1000 if values else float("nan")


def prompts_for(tokenizer: Tokenizer, count: int, length: int) -> list[str]:
    """`count` different code prompts of about `length` tokens."""
    seeds = [
        "import os\nimport sys\n",
        "def main(argv):\n",
        "class Parser:\n    def __init__(self",
        "for item in items:\n",
    ]
    out = []
    for i in range(count):
        text = seeds[i % len(seeds)] + f"    value_{i} = compute({i}, "
        ids = tokenizer.encode(text * 8).ids[:length]
        out.append(tokenizer.decode(ids))
    return out


async def _one(
    endpoint: Endpoint,
    target: tuple[str, str],
    prompt: str,
    max_tokens: int,
    m: Measurement | None,
) -> None:
    model, version = target
    call = GenerateCall(
        model=model, version=int(version), prompt=prompt, max_tokens=max_tokens, temperature=0.0
    )
    request = infer_request(call)  # what the gateway sends
    start = last = time.perf_counter()
    first = True
    async for response in endpoint.stream(request, timeout_s=600):
        count = len(parse_response(response).token_ids)
        if m is None or not count:
            continue
        now = time.perf_counter()
        if first:
            m.ttft_s.append(now - start)
            first = False
        else:
            m.itl_s.extend([(now - last) / count] * count)
        last = now
        m.tokens += count


def bench_triton(
    url: str, model: str, version: str, prompts: list[str], max_tokens: int
) -> Measurement:
    m = Measurement("triton", len(prompts))

    async def run() -> None:
        # The gateway's own client: one channel, and a stream per concurrent request kept open
        # from one request to the next. Opening them (a short round first) is not measured.
        endpoint = Endpoint(url)
        try:
            await endpoint.server_live()
            target = (model, version)
            await asyncio.gather(*(_one(endpoint, target, p, 2, None) for p in prompts))
            start = time.perf_counter()
            await asyncio.gather(*(_one(endpoint, target, p, max_tokens, m) for p in prompts))
            m.wall_s = time.perf_counter() - start
        finally:
            await endpoint.close()

    asyncio.run(run())
    return m


class _Collect:
    """An engine sink that notes when text arrives, as the Triton client does."""

    def __init__(self, m: Measurement, start: float) -> None:
        self.m, self.start, self.last, self.done = m, start, start, threading.Event()

    def send(self, chunk: Chunk) -> None:
        count, now = len(chunk.token_ids), time.perf_counter()
        if count:
            if self.last == self.start:
                self.m.ttft_s.append(now - self.start)
            else:
                self.m.itl_s.extend([(now - self.last) / count] * count)
            self.last = now
            self.m.tokens += count
        if chunk.final:
            self.done.set()

    def cancelled(self) -> bool:
        return False


def bench_engine(engine: Engine, prompts: list[str], max_tokens: int) -> Measurement:
    m = Measurement("engine", len(prompts))
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    start = time.perf_counter()
    sinks = [_Collect(m, start) for _ in prompts]
    for prompt, sink in zip(prompts, sinks, strict=True):
        engine.submit(GenerationRequest(prompt=prompt, params=params), sink)
    for sink in sinks:
        sink.done.wait(600)
    m.wall_s = time.perf_counter() - start
    return m


def bench_ort(
    decoder: OnnxDecoder, tokenizer: Tokenizer, prompts: list[str], max_tokens: int
) -> Measurement:
    m = Measurement("ort-batched", len(prompts))
    batch = KVBatch(decoder.shape)
    start = time.perf_counter()
    ids, mask, positions = KVBatch.prefill_inputs([tokenizer.encode(p).ids for p in prompts])
    logits, present = decoder.step(ids, mask, positions, batch._empty(len(prompts), 0))
    batch.join(present, mask)
    m.ttft_s = [time.perf_counter() - start] * len(prompts)
    for _ in range(max_tokens - 1):
        step_start = time.perf_counter()
        nxt = logits.argmax(-1)[:, None].astype(np.int64)
        step_mask, step_positions = batch.decode_inputs()
        logits, present = decoder.step(nxt, step_mask, step_positions, batch.past)
        batch.advance(present, step_mask)
        m.itl_s.extend([time.perf_counter() - step_start] * len(prompts))
    m.wall_s = time.perf_counter() - start
    m.tokens = max_tokens * len(prompts)
    return m


class _FirstToken:
    """A transformers streamer that notes when the first new token arrives."""

    def __init__(self) -> None:
        self.calls, self.first = 0, 0.0

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2:  # the first call carries the prompt
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def bench_transformers(
    hf: Any, tokenizer: Tokenizer, prompts: list[str], max_tokens: int
) -> Measurement:
    m = Measurement("transformers", len(prompts))
    start = time.perf_counter()
    previous_end = start
    for prompt in prompts:
        ids = torch.tensor([tokenizer.encode(prompt).ids])
        streamer = _FirstToken()
        with torch.no_grad():
            hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=False,
                streamer=streamer,
                pad_token_id=0,
            )
        end = time.perf_counter()
        m.ttft_s.append(streamer.first - start)
        m.itl_s.extend([(end - streamer.first) / max(1, max_tokens - 1)] * (max_tokens - 1))
        previous_end = end
    m.wall_s = previous_end - start
    m.tokens = max_tokens * len(prompts)
    return m


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.generation")
    parser.add_argument("--model", default="code-gpt")
    parser.add_argument("--version", type=int, help="default: the newest ready version")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of Triton and raw ORT per level"
    )
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--skip-engine", action="store_true")
    parser.add_argument("--plot", type=Path, help="default: <var_dir>/bench/generation.png")
    args = parser.parse_args()
    stop_cleanly_on_sigterm()
    console = Console(width=160)
    settings = HostingSettings()
    if args.version is None:
        args.version = newest_ready(settings.registry, args.model)
    version_dir = settings.registry.model_repository / args.model / str(args.version)
    served = resolve(version_dir, settings.engine.artifact, settings.engine.device)
    tokenizer = Tokenizer.from_file(str(served.tokenizer))
    context = int(served.manifest.hyperparameters["model"]["context_length"])
    decoder = OnnxDecoder(served.path, context_length=context, providers=served.providers)
    hf = None
    if not args.skip_transformers:
        out = Path(tempfile.mkdtemp())
        export_hf(
            model=load_model(version_dir / "model.pt"), tokenizer_path=served.tokenizer, out_dir=out
        )
        from transformers import AutoModelForCausalLM  # noqa: PLC0415 (only for this reference)

        hf = AutoModelForCausalLM.from_pretrained(out)
        hf.eval()  # type: ignore[no-untyped-call]
    levels = [int(c) for c in args.concurrency.split(",")]
    settings = settings.model_copy(
        update={
            "engine": settings.engine.model_copy(
                update={"max_active": max(levels), "max_queue": max(levels)}
            )
        }
    )
    prepare(settings)
    engine = None
    if not args.skip_engine:
        engine, _ = build_engine(served, model_parameters(settings.engine, settings.triton))
        engine.start()
    results: list[Measurement] = []
    console.print(
        f"{args.model} v{args.version}: {served.path.name}, context {context}; "
        f"{args.max_tokens} new tokens per request"
    )
    with server_for(settings, [args.model]) as server:
        for level in levels:
            prompts = prompts_for(tokenizer, level, args.prompt_tokens)
            # One untimed pass per level and system: first calls at a new batch size pay for
            # allocations that a running service has long since made.
            target = (server.grpc_url, args.model, str(args.version))
            bench_triton(*target, prompts, args.max_tokens)
            bench_ort(decoder, tokenizer, prompts, args.max_tokens)
            triton, ort = Measurement("triton", level), Measurement("ort-batched", level)
            alone = Measurement("engine", level)
            if engine is not None:
                bench_engine(engine, prompts, args.max_tokens)
            for _ in range(args.rounds):
                triton.add(bench_triton(*target, prompts, args.max_tokens))
                if engine is not None:
                    alone.add(bench_engine(engine, prompts, args.max_tokens))
                ort.add(bench_ort(decoder, tokenizer, prompts, args.max_tokens))
            results += [triton, alone, ort] if engine is not None else [triton, ort]
            if hf is not None:
                results.append(bench_transformers(hf, tokenizer, prompts, args.max_tokens))
            console.print(f"concurrency {level} done")
    if engine is not None:
        engine.stop()
    table = Table(
        "concurrency",
        "system",
        "tokens/s",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "ITL mean ms",
        "vs ort",
        "per round",
        "vs transformers",
    )
    for level in levels:
        row = {m.system: m for m in results if m.concurrency == level}
        for m in row.values():
            ort = row["ort-batched"]
            hf_tps = row["transformers"].tokens_per_s if "transformers" in row else float("nan")
            each = [t / o for t, o in zip(m.rounds, ort.rounds, strict=True)] if m.rounds else []
            table.add_row(
                str(level),
                m.system,
                f"{m.tokens_per_s:,.0f}",
                f"{m.pct(m.ttft_s, 50):.1f}",
                f"{m.pct(m.ttft_s, 99):.1f}",
                f"{statistics.fmean(m.itl_s) * 1000:.2f}" if m.itl_s else "-",
                f"{m.tokens_per_s / ort.tokens_per_s:.2f}x",
                f"{min(each):.2f}-{max(each):.2f}" if m is not ort and each else "-",
                f"{m.tokens_per_s / hf_tps:.1f}x" if not math.isnan(hf_tps) else "-",
            )
    console.print(table)
    plot = args.plot or settings.registry.var_dir / "bench" / "generation.png"
    save_plot(results, levels, plot)
    console.print(f"plot: {plot}")


def save_plot(results: list[Measurement], levels: list[int], path: Path) -> None:
    with figure(path, 2, size=(11, 4)) as (left, right):
        for system in dict.fromkeys(m.system for m in results):
            rows = [
                next(m for m in results if m.system == system and m.concurrency == c)
                for c in levels
            ]
            left.plot(levels, [m.tokens_per_s for m in rows], marker="o", label=system)
            right.plot(levels, [m.pct(m.ttft_s, 50) for m in rows], marker="o", label=system)
        left.set(
            xlabel="concurrent streams",
            ylabel="aggregate tokens/s",
            xscale="log",
            title="throughput",
        )
        right.set(
            xlabel="concurrent streams",
            ylabel="TTFT p50 (ms)",
            xscale="log",
            yscale="log",
            title="time to first token",
        )
        for axis in (left, right):
            axis.grid(True, alpha=0.3)
            axis.legend()


if __name__ == "__main__":
    main()
