"""ONNX export with parity checks, INT8 quantization figures, Q/DQ, TensorRT skip, HF export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer.export_hf import export_hf
from trainer.export_onnx import (
    ExportParityError,
    check_parity,
    export_onnx,
    input_names,
    run_step,
    session,
)
from trainer.model import GPT, GPTConfig
from trainer.quantize import build_tensorrt_engine, compare_quantized, export_qdq, quantize
from trainer.tokenizer import save_tokenizer, train_tokenizer

CONFIG = GPTConfig(vocab_size=300, context_length=32, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


@pytest.fixture(scope="module")
def onnx_path(model: GPT, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(model=model, out_path=tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = ["def f(x):\n    return x * 2\n", "class A:\n    pass\n", "print('hi')\n"] * 50
    tok: Tokenizer = train_tokenizer(texts=texts, vocab_size=300)
    return save_tokenizer(tok, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def test_onnx_io_contract_and_parity(model: GPT, onnx_path: Path) -> None:
    sess = session(onnx_path)
    assert [i.name for i in sess.get_inputs()] == input_names(2)
    assert [o.name for o in sess.get_outputs()][:3] == [
        "logits",
        "present_key_0",
        "present_value_0",
    ]
    assert not list(onnx_path.parent.glob("*.data")), "weights are inside the one .onnx file"
    report = check_parity(model=model, onnx_path=onnx_path)
    assert report.max_abs_diff < 1e-4
    assert set(report.cases) == {
        "prefill",
        "decode_0",
        "decode_1",
        "decode_2",
        "decode_3",
        "padded_batch",
    }


def test_parity_failure_is_loud(model: GPT, onnx_path: Path) -> None:
    other = GPT(CONFIG).eval()  # different random weights
    with pytest.raises(ExportParityError, match="differs from PyTorch"):
        check_parity(model=other, onnx_path=onnx_path)
    assert model.config == other.config


def test_int8_weights_are_smaller_close_and_batch_invariant(
    onnx_path: Path, tmp_path: Path
) -> None:
    int8 = quantize(fp32_path=onnx_path, int8_path=tmp_path / "model.int8.onnx")
    ops = [node.op_type for node in onnx.load(str(int8)).graph.node]
    assert ops.count("MatMulNBits") == 4 * CONFIG.n_layer, "every block's weight matrix is int8"
    assert "DynamicQuantizeLinear" not in ops
    val = np.random.default_rng(0).integers(0, 300, 2000).astype(np.int32)
    metrics = compare_quantized(fp32_path=onnx_path, int8_path=int8, val_ids=val, context=32)
    assert metrics.size_ratio < 0.9
    assert metrics.decode_speed_ratio > 0
    assert abs(metrics.perplexity_change) < 0.05
    assert set(metrics.as_metrics()) >= {
        "quant_size_ratio",
        "quant_decode_speed_ratio",
        "quant_perplexity_change",
    }
    # A request's logits must not depend on what it is batched with.
    sess = session(int8)
    a, b = val[None, :12].astype(np.int64), val[None, 40:52].astype(np.int64)
    empty = [np.zeros((1, CONFIG.n_head, 0, CONFIG.head_dim), np.float32)] * (2 * CONFIG.n_layer)
    positions = np.arange(12)[None]
    alone, _ = run_step(sess, a, np.ones_like(a), positions, empty)
    pair = np.concatenate([a, b])
    batched, _ = run_step(
        sess,
        pair,
        np.ones_like(pair),
        np.repeat(positions, 2, 0),
        [np.repeat(e, 2, 0) for e in empty],
    )
    assert np.array_equal(alone[0], batched[0])


def test_qdq_graph_runs_and_tensorrt_is_skipped_with_a_reason(
    onnx_path: Path, tmp_path: Path
) -> None:
    val = np.random.default_rng(1).integers(0, 300, 500).astype(np.int32)
    qdq = export_qdq(fp32_path=onnx_path, out_path=tmp_path / "model.qdq.onnx", calibration_ids=val)
    ops = {node.op_type for node in onnx.load(str(qdq)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert session(qdq) is not None
    result = build_tensorrt_engine(qdq_path=qdq, out_path=tmp_path / "model.plan")
    if result.built:  # a machine with TensorRT and a GPU
        assert (tmp_path / "model.plan").is_file()
        assert result.compute_capability
    else:
        assert result.reason
        assert not (tmp_path / "model.plan").exists()


def test_hugging_face_export_gives_the_same_logits(
    model: GPT, tokenizer_path: Path, tmp_path: Path
) -> None:
    out = export_hf(model=model, tokenizer_path=tokenizer_path, out_dir=tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(out)
    hf.eval()  # type: ignore[no-untyped-call]
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tokenizer.encode("def f(x):\n    return x")])
    assert ids.max() < CONFIG.vocab_size
    with torch.no_grad():
        theirs = hf(ids).logits
        ours, _ = model(ids)
    assert torch.allclose(theirs, ours, atol=1e-4)
    assert tokenizer.eos_token == "<|endoftext|>"


def test_quantizing_leaves_logging_alone(onnx_path: Path, tmp_path: Path) -> None:
    # In a fresh process: pytest's own log handlers would hide a stray logging.basicConfig().
    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from trainer.quantize import quantize\n"
        "quantize(fp32_path=Path(sys.argv[1]), int8_path=Path(sys.argv[2]))\n"
        "root = logging.getLogger()\n"
        "print(len(root.handlers), root.level)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(onnx_path), str(tmp_path / "q.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split() == ["0", str(30)], "no handler added, level still WARNING"
