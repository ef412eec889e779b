"""ONNX export of the KV-cache inference path, checked against PyTorch before it is accepted.

The graph (one graph for prefill and decode; an empty past is allowed):

    inputs   input_ids        int64  (batch, seq)
             attention_mask   int64  (batch, past + seq)   1 real token, 0 padding (left)
             position_ids     int64  (batch, seq)
             past_key_<i>     float  (batch, n_head, past, head_dim)   for each layer i
             past_value_<i>   float  (batch, n_head, past, head_dim)
    outputs  logits           float  (batch, seq, vocab)
             present_key_<i>  float  (batch, n_head, past + seq, head_dim)
             present_value_<i>

Exported with `torch.onnx.export(dynamo=True)` (a smaller, cleaner graph than the TorchScript
exporter); batch, sequence and past lengths are dynamic. `check_parity` runs ONNX Runtime and
PyTorch side by side on a prefill from an empty past, several cached decode steps and a
left-padded batch, and raises `ExportParityError` beyond the tolerance.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch
from torch import Tensor, nn

from trainer.model import GPT, KVCache

DEFAULT_TOLERANCE = 1e-3  # max abs difference of fp32 logits


class ExportParityError(RuntimeError):
    """ONNX Runtime's logits differ from PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff: float
    tolerance: float
    cases: dict[str, float]


def input_names(n_layer: int) -> list[str]:
    names = ["input_ids", "attention_mask", "position_ids"]
    return names + [f"past_{kind}_{i}" for i in range(n_layer) for kind in ("key", "value")]


def output_names(n_layer: int) -> list[str]:
    return ["logits"] + [f"present_{kind}_{i}" for i in range(n_layer) for kind in ("key", "value")]


class _CachedStep(nn.Module):
    """forward_with_cache with the cache as nested (key, value) pairs, as export wants it."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor,
        past: list[tuple[Tensor, Tensor]],
    ) -> tuple[Tensor, ...]:
        logits, present = self.model.forward_with_cache(
            input_ids, attention_mask, position_ids, past
        )
        return (logits, *[t for pair in present for t in pair])


def export_onnx(*, model: GPT, out_path: Path, opset: int = 18) -> Path:
    """Write `model`'s cached inference path to `out_path` as one self-contained .onnx file."""
    model = model.eval()
    c = model.config
    batch, seq, past = 2, 3, 4  # every dynamic dimension >= 2 so export does not specialise it
    kv = (batch, c.n_head, past, c.head_dim)
    example = (
        torch.randint(0, c.vocab_size, (batch, seq)),
        torch.ones(batch, past + seq, dtype=torch.long),
        torch.arange(past, past + seq).expand(batch, seq).contiguous(),
        [(torch.randn(kv), torch.randn(kv)) for _ in range(c.n_layer)],
    )
    dyn = torch.export.Dim.DYNAMIC
    shapes = (
        {0: dyn, 1: dyn},
        {0: dyn, 1: dyn},
        {0: dyn, 1: dyn},
        [({0: dyn, 2: dyn}, {0: dyn, 2: dyn}) for _ in range(c.n_layer)],
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # The exporter logs that optional torchvision operators are unavailable; they are unused.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        # The exporter reports its own progress and internal deprecations as warnings.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _CachedStep(model),
            example,
            dynamo=True,
            dynamic_shapes=shapes,
            input_names=input_names(c.n_layer),
            output_names=output_names(c.n_layer),
            opset_version=opset,
            verbose=False,
        )
        if program is None:
            raise RuntimeError("torch.onnx.export returned no program")
        program.save(str(out_path), external_data=False)
    return out_path


def session(path: Path, *, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_step(
    sess: ort.InferenceSession,
    input_ids: npt.NDArray[np.int64],
    attention_mask: npt.NDArray[np.int64],
    position_ids: npt.NDArray[np.int64],
    past: list[npt.NDArray[np.float32]],
) -> tuple[npt.NDArray[np.float32], list[npt.NDArray[np.float32]]]:
    """One ONNX Runtime step with flat past tensors [k0, v0, k1, v1, ...]."""
    names = [i.name for i in sess.get_inputs()]
    feeds = dict(zip(names, [input_ids, attention_mask, position_ids, *past], strict=True))
    logits, *present = sess.run(None, feeds)
    return logits, present


def _torch_step(
    model: GPT, ids: Tensor, mask: Tensor, pos: Tensor, cache: KVCache
) -> tuple[npt.NDArray[np.float32], KVCache]:
    logits, cache = model.forward_with_cache(ids, mask, pos, cache)
    return logits.numpy(), cache


@torch.no_grad()
def check_parity(
    *, model: GPT, onnx_path: Path, tolerance: float = DEFAULT_TOLERANCE, seed: int = 0
) -> ParityReport:
    """Compare ONNX Runtime with PyTorch; raise `ExportParityError` beyond `tolerance`."""
    model = model.eval()
    c = model.config
    sess = session(onnx_path)
    gen = torch.Generator().manual_seed(seed)
    cases: dict[str, float] = {}

    # Prefill from an empty past, then cached decode steps, for a batch of 2.
    ids = torch.randint(0, c.vocab_size, (2, 6), generator=gen)
    mask = torch.ones(2, 6, dtype=torch.long)
    pos = torch.arange(6).expand(2, 6)
    ref, cache = _torch_step(model, ids, mask, pos, model.empty_cache(2))
    empty = [np.zeros((2, c.n_head, 0, c.head_dim), np.float32)] * (2 * c.n_layer)
    got, past = run_step(sess, ids.numpy(), mask.numpy(), pos.numpy(), empty)
    cases["prefill"] = float(np.abs(ref - got).max())
    for step in range(4):
        nxt = torch.randint(0, c.vocab_size, (2, 1), generator=gen)
        mask = torch.ones(2, 7 + step, dtype=torch.long)
        pos = torch.full((2, 1), 6 + step)
        ref, cache = _torch_step(model, nxt, mask, pos, cache)
        got, past = run_step(sess, nxt.numpy(), mask.numpy(), pos.numpy(), past)
        cases[f"decode_{step}"] = float(np.abs(ref - got).max())

    # A left-padded batch: row 0 has 3 padding tokens.
    ids = torch.randint(0, c.vocab_size, (2, 7), generator=gen)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7])
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    ref, _ = _torch_step(model, ids, mask, pos, model.empty_cache(2))
    empty = [np.zeros((2, c.n_head, 0, c.head_dim), np.float32)] * (2 * c.n_layer)
    got, _ = run_step(sess, ids.numpy(), mask.numpy(), pos.numpy(), empty)
    real = mask.numpy().astype(bool)
    cases["padded_batch"] = float(np.abs(ref - got)[real].max())

    worst = max(cases.values())
    if not np.isfinite(worst) or worst > tolerance:
        raise ExportParityError(
            f"ONNX Runtime differs from PyTorch by {worst:.3g} (tolerance {tolerance:g}): {cases}"
        )
    return ParityReport(max_abs_diff=worst, tolerance=tolerance, cases=cases)
