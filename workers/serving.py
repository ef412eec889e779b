"""The engine a worker serves a version with, built from its model configuration's parameters.

The Triton adapter and the benchmark's engine-alone measurement both build it here, so the
benchmark measures the engine the worker runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tokenizers import Tokenizer

from workers.artifacts import ServedArtifact
from workers.engine import Engine, EngineConfig
from workers.runtime import OnnxDecoder, plan_lanes


def build_engine(
    served: ServedArtifact,
    params: Mapping[str, str],
    *,
    on_failure: Callable[[str], None] | None = None,
) -> tuple[Engine, str]:
    """A (not yet started) engine for `served` and a line saying how it decodes."""
    context = int(served.manifest.hyperparameters["model"]["context_length"])
    max_active = int(params.get("max_active", "32"))
    lanes, threads = plan_lanes(
        lanes=int(params.get("lanes", "0")),
        threads=int(params.get("threads", "0")),
        device=served.device,
        max_active=max_active,
    )
    # Inside Triton the decoder shares the cores with the server's own threads (gRPC,
    # responses), so a thread pool, where there is one, sleeps when idle instead of
    # spinning. One session serves every lane: its runs are safe to make at the same time.
    decoder = OnnxDecoder(
        served.path,
        context_length=context,
        threads=threads,
        spin=False,
        providers=served.providers,
    )
    tokenizer = Tokenizer.from_file(str(served.tokenizer))
    # A prompt that contains the text "<|endoftext|>" is text, not a document boundary.
    tokenizer.encode_special_tokens = True
    engine = Engine(
        decoder=decoder,
        tokenizer=tokenizer,
        config=EngineConfig(
            max_active=max_active,
            max_queue=int(params.get("max_queue", "256")),
            tokens_per_response=int(params.get("tokens_per_response", "8")),
            response_interval_s=float(params.get("response_interval_ms", "20")) / 1000,
            responses_per_s=float(params.get("responses_per_s", "500")),
            lanes=lanes,
            senders=int(params.get("senders", "3")),
        ),
        on_failure=on_failure,
    )
    return engine, f"{lanes} lanes, {threads or 'auto'} threads each"
