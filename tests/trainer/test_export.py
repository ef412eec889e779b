"""ONNX export with parity checks, INT8 quantization figures, Q/DQ, TensorRT skip, HF export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer.export_hf import export_hf
from trainer.export_onnx import ExportParityError, check_parity, export_onnx, input_names, session
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


def test_int8_quantization_is_smaller_and_close(onnx_path: Path, tmp_path: Path) -> None:
    int8 = quantize(fp32_path=onnx_path, int8_path=tmp_path / "model.int8.onnx")
    val = np.random.default_rng(0).integers(0, 300, 2000).astype(np.int32)
    metrics = compare_quantized(fp32_path=onnx_path, int8_path=int8, val_ids=val, context=32)
    assert metrics.size_ratio < 0.6
    assert metrics.decode_speed_ratio > 0
    assert abs(metrics.perplexity_change) < 0.05
    assert set(metrics.as_metrics()) >= {
        "quant_size_ratio",
        "quant_decode_speed_ratio",
        "quant_perplexity_change",
    }


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
