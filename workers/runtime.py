"""The decoder a worker runs: an ONNX Runtime session over the exported KV-cache graph.

The graph's contract is in `trainer/export_onnx.py`: ids, mask, positions and per-layer past
key/value in; logits and present key/value out. `Decoder` is the seam the engine depends on,
so the scheduler is tested with a fake that needs no model file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

Array = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DecoderShape:
    n_layer: int
    n_head: int
    head_dim: int
    context_length: int


def plan_lanes(
    *, lanes: int, threads: int, device: str, max_active: int, cores: int | None = None
) -> tuple[int, int]:
    """(lanes, ONNX Runtime threads per lane) for the settings, where 0 means choose.

    On a CPU: a lane per core, but at least 4 slots per lane, and the cores shared out among
    the lanes (one thread each when there are as many lanes as cores). On a GPU, one lane: its
    steps would only take turns on the device. Never more lanes than slots. One lane and no
    thread count leave the choice to ONNX Runtime.
    """
    cores = cores or len(os.sched_getaffinity(0))
    if not lanes:
        lanes = 1 if device != "cpu" else max(1, min(cores, max_active // 4))
    lanes = min(lanes, max(1, max_active))  # a lane that can never hold a row is no use
    if not threads and lanes > 1 and device == "cpu":
        threads = max(1, cores // lanes)
    return lanes, threads


class Decoder(Protocol):
    shape: DecoderShape

    def step(
        self, input_ids: Ids, attention_mask: Ids, position_ids: Ids, past: list[Array]
    ) -> tuple[Array, list[Array]]:
        """Last-position logits (batch, vocab) and the present cache (flat k, v list)."""
        ...


class OnnxDecoder:
    def __init__(
        self,
        path: Path,
        *,
        context_length: int,
        threads: int = 0,
        spin: bool = True,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            # Idle pool threads that spin take CPU from the server's other threads.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), options, providers=list(providers))
        self._names = [i.name for i in self._session.get_inputs()]
        pasts = [i for i in self._session.get_inputs() if i.name.startswith("past_key_")]
        _, heads, _, dim = pasts[0].shape
        self.shape = DecoderShape(
            n_layer=len(pasts), n_head=int(heads), head_dim=int(dim), context_length=context_length
        )

    def step(
        self, input_ids: Ids, attention_mask: Ids, position_ids: Ids, past: list[Array]
    ) -> tuple[Array, list[Array]]:
        feeds = dict(
            zip(self._names, [input_ids, attention_mask, position_ids, *past], strict=True)
        )
        logits, *present = self._session.run(None, feeds)
        return np.ascontiguousarray(logits[:, -1, :]), present
