"""INT8 quantization with ONNX Runtime, its evaluation, and the Q/DQ graph TensorRT builds from.

- `quantize`: weight-only INT8: every MatMul weight stored as 8-bit integers with one scale per
  block of 32 (`MatMulNBits`), computed with int8 kernels (accuracy level 4). Activations are
  quantized per row block, never across the batch, so a request's logits do not depend on the
  other requests it is batched with. ONNX Runtime's dynamic quantization is smaller and faster
  on CPU but quantizes activations per tensor, i.e. across the whole batch: a row's logits then
  move by up to 0.1 when its neighbours change, and greedy outputs in a batch differ from the
  same request alone. The embedding (shared with the output layer) stays fp32.
- `compare_quantized`: file-size ratio, decode-speed ratio (int8 tokens/s / fp32 tokens/s on the
  same cached decode loop, measured in one run) and validation perplexity of both.
- `export_qdq`: an explicitly quantized (Q/DQ, symmetric) graph calibrated on real token ids.
- `build_tensorrt_engine`: where `tensorrt` imports and a CUDA GPU is present, an INT8 engine
  built from the Q/DQ graph, recording the GPU's compute capability and TensorRT's version;
  otherwise a one-line reason why it was skipped.
"""

from __future__ import annotations

import importlib
import logging
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from trainer.export_onnx import run_step, session


@dataclass(frozen=True)
class QuantizationMetrics:
    size_ratio: float  # int8 bytes / fp32 bytes
    decode_speed_ratio: float  # int8 tokens/s / fp32 tokens/s
    fp32_tokens_per_s: float
    int8_tokens_per_s: float
    fp32_val_perplexity: float
    int8_val_perplexity: float
    perplexity_change: float  # relative: int8 / fp32 - 1

    def as_metrics(self) -> dict[str, float]:
        return {f"quant_{k}": round(v, 6) for k, v in vars(self).items()}


@dataclass(frozen=True)
class TensorRTResult:
    built: bool
    reason: str = ""
    engine: str = ""
    tensorrt_version: str = ""
    compute_capability: str = ""


def _preprocess(fp32_path: Path, out: Path) -> Path:
    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=True)
    return out


def _matmul_nbits_quantizer() -> Any:
    """ONNX Runtime's weight-only quantizer. Importing it calls `logging.basicConfig(INFO)`,
    which would print every library's INFO records; the root logger is put back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import (  # noqa: PLC0415
        MatMulNBitsQuantizer,
    )

    root.handlers[:] = handlers
    root.setLevel(level)
    return MatMulNBitsQuantizer


def quantize(*, fp32_path: Path, int8_path: Path, block_size: int = 32) -> Path:
    """Weight-only INT8 (batch-invariant) quantization of `fp32_path` into `int8_path`."""
    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    quantizer = _matmul_nbits_quantizer()(
        onnx.load(str(fp32_path)),
        bits=8,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=4,
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(int8_path), False)
    return int8_path


def _layout(path: Path) -> tuple[int, int, int]:
    """(n_layer, n_head, head_dim) from the graph's past-key inputs."""
    inputs = session(path).get_inputs()
    pasts = [i for i in inputs if i.name.startswith("past_key_")]
    _, heads, _, dim = pasts[0].shape
    return len(pasts), int(heads), int(dim)


def perplexity(
    path: Path, val_ids: npt.NDArray[np.int32], *, context: int, windows: int = 16
) -> float:
    """Perplexity of the next-token predictions over evenly spaced validation windows."""
    sess = session(path)
    n_layer, heads, dim = _layout(path)
    starts = np.linspace(
        0, len(val_ids) - context - 1, min(windows, max(1, len(val_ids) - context - 1))
    ).astype(int)
    x = np.stack([val_ids[s : s + context] for s in starts]).astype(np.int64)
    y = np.stack([val_ids[s + 1 : s + 1 + context] for s in starts]).astype(np.int64)
    empty = [np.zeros((len(starts), heads, 0, dim), np.float32)] * (2 * n_layer)
    positions = np.broadcast_to(np.arange(context), x.shape).copy()
    logits, _ = run_step(sess, x, np.ones_like(x), positions, empty)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, y[..., None], axis=-1).mean()
    return float(math.exp(nll))


def decode_speed(
    path: Path, *, prompt: npt.NDArray[np.int64], steps: int = 64, batch: int = 8
) -> float:
    """Tokens/s of a greedy cached decode loop (batch rows in parallel), after a warmup."""
    sess = session(path)
    n_layer, heads, dim = _layout(path)

    def run(n: int) -> float:
        ids = np.tile(prompt, (batch, 1))
        past = [np.zeros((batch, heads, 0, dim), np.float32)] * (2 * n_layer)
        mask = np.ones_like(ids)
        logits, past = run_step(
            sess, ids, mask, np.broadcast_to(np.arange(ids.shape[1]), ids.shape).copy(), past
        )
        started = time.perf_counter()
        for i in range(n):
            nxt = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
            mask = np.ones((batch, mask.shape[1] + 1), np.int64)
            logits, past = run_step(sess, nxt, mask, np.full((batch, 1), ids.shape[1] + i), past)
        return batch * n / (time.perf_counter() - started)

    run(4)
    return run(steps)


def compare_quantized(
    *,
    fp32_path: Path,
    int8_path: Path,
    val_ids: npt.NDArray[np.int32],
    context: int,
    rounds: int = 3,
) -> QuantizationMetrics:
    prompt = val_ids[: min(16, context // 2)].astype(np.int64)
    steps = max(8, min(64, context - len(prompt) - 1))
    # Interleaved rounds, median of each: this machine's speed drifts between runs.
    speeds: dict[Path, list[float]] = {fp32_path: [], int8_path: []}
    for _ in range(rounds):
        for path, measured in speeds.items():
            measured.append(decode_speed(path, prompt=prompt, steps=steps))
    fp32_speed, int8_speed = (float(np.median(speeds[p])) for p in (fp32_path, int8_path))
    fp32_ppl = perplexity(fp32_path, val_ids, context=context)
    int8_ppl = perplexity(int8_path, val_ids, context=context)
    return QuantizationMetrics(
        size_ratio=int8_path.stat().st_size / fp32_path.stat().st_size,
        decode_speed_ratio=int8_speed / fp32_speed,
        fp32_tokens_per_s=fp32_speed,
        int8_tokens_per_s=int8_speed,
        fp32_val_perplexity=fp32_ppl,
        int8_val_perplexity=int8_ppl,
        perplexity_change=int8_ppl / fp32_ppl - 1.0,
    )


class _Calibration(CalibrationDataReader):  # type: ignore[misc]
    """Real token windows (prefill from an empty past) for static calibration."""

    def __init__(
        self, path: Path, ids: npt.NDArray[np.int32], *, windows: int = 8, length: int = 32
    ) -> None:
        n_layer, heads, dim = _layout(path)
        self._names = [i.name for i in session(path).get_inputs()]
        starts = np.linspace(0, max(0, len(ids) - length - 1), windows).astype(int)
        self._feeds: Iterator[dict[str, Any]] = iter(
            [self._feed(ids[s : s + length], n_layer, heads, dim) for s in starts]
        )

    def _feed(
        self, window: npt.NDArray[np.int32], n_layer: int, heads: int, dim: int
    ) -> dict[str, Any]:
        x = window[None, :].astype(np.int64)
        values = [x, np.ones_like(x), np.arange(x.shape[1])[None, :].astype(np.int64)]
        values += [np.zeros((1, heads, 0, dim), np.float32)] * (2 * n_layer)
        return dict(zip(self._names, values, strict=True))

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


def export_qdq(*, fp32_path: Path, out_path: Path, calibration_ids: npt.NDArray[np.int32]) -> Path:
    """A Q/DQ INT8 graph (symmetric, per-channel weights) calibrated on real tokens."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = _preprocess(fp32_path, Path(tmp) / "prepared.onnx")
        quantize_static(
            str(prepared),
            str(out_path),
            _Calibration(prepared, calibration_ids),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    return out_path


def build_tensorrt_engine(*, qdq_path: Path, out_path: Path) -> TensorRTResult:
    """Build an INT8 TensorRT engine where TensorRT and a CUDA GPU exist; else say why not."""
    try:
        trt: Any = importlib.import_module("tensorrt")
    except ImportError:
        return TensorRTResult(
            built=False, reason="TensorRT is not installed (import tensorrt failed)"
        )
    import torch  # noqa: PLC0415 (only needed on this path)

    if not torch.cuda.is_available():
        return TensorRTResult(built=False, reason="no CUDA GPU is available")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(qdq_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        return TensorRTResult(
            built=False, reason=f"TensorRT could not parse the Q/DQ graph: {errors}"
        )
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    # (min, opt, max) per input; at the optimum, one decode step after 63 cached tokens, so
    # that attention_mask = past + seq holds (64 = 63 + 1).
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shapes: tuple[tuple[int, ...], ...]
        if len(tensor.shape) == 4:  # past key/value: (batch, heads, past, head_dim)
            heads, dim = tensor.shape[1], tensor.shape[3]
            shapes = ((1, heads, 0, dim), (4, heads, 63, dim), (32, heads, 512, dim))
        elif tensor.name == "attention_mask":  # (batch, past + seq)
            shapes = ((1, 1), (4, 64), (32, 1024))
        else:  # input_ids, position_ids: (batch, seq)
            shapes = ((1, 1), (4, 1), (32, 512))
        profile.set_shape(tensor.name, *shapes)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        return TensorRTResult(built=False, reason="TensorRT failed to build the engine")
    out_path.write_bytes(bytes(engine))
    major, minor = torch.cuda.get_device_capability()
    return TensorRTResult(
        built=True,
        engine=str(out_path),
        tensorrt_version=str(trt.__version__),
        compute_capability=f"{major}.{minor}",
    )
