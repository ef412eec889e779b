"""The decoder a worker runs: an ONNX Runtime session over the exported KV-cache graph.

The graph's contract is in `trainer/export_onnx.py`: ids, mask, positions and per-layer past
key/value in; logits and present key/value out. `Decoder` is the seam the engine depends on,
so the scheduler is tested with a fake that needs no model file.
"""

from __future__ import annotations

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
