"""Export a version as a Hugging Face `transformers` GPT-2 directory.

The model's parameter names already follow GPT2LMHeadModel; Hugging Face keeps the attention
and MLP projections in `Conv1D` layers, whose weights are the transpose of `nn.Linear`'s. The
directory loads with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`
and gives the same logits, so a trained model can leave Tollgate for any tool that reads
that format.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from trainer.model import GPT, LAYER_NORM_EPS
from trainer.tokenizer import EOT_ID, EOT_TOKEN

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_config(model: GPT) -> GPT2Config:
    c = model.config
    return GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.context_length,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        activation_function="gelu",  # exact erf GELU, as in trainer.model.MLP
        layer_norm_epsilon=LAYER_NORM_EPS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=EOT_ID,
        eos_token_id=EOT_ID,
        tie_word_embeddings=True,
    )


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            state[name] = tensor.clone()
            continue
        value = tensor.t().contiguous() if name.endswith(_CONV1D) else tensor.clone()
        state[f"transformer.{name}"] = value
    return state


def export_hf(*, model: GPT, tokenizer_path: Path, out_dir: Path) -> Path:
    """Write `config.json`, `model.safetensors` and tokenizer files into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf = GPT2LMHeadModel(hf_config(model))
    missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False)
    # GPT-2's causal-mask buffers are not parameters; anything else missing is a mapping bug.
    real_missing = [m for m in missing if not m.endswith((".attn.bias", ".attn.masked_bias"))]
    if real_missing or unexpected:
        raise RuntimeError(
            f"weight mapping failed: missing {real_missing}, unexpected {unexpected}"
        )
    hf.save_pretrained(out_dir)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_file=str(tokenizer_path),
        bos_token=EOT_TOKEN,
        eos_token=EOT_TOKEN,
        unk_token=EOT_TOKEN,
        pad_token=EOT_TOKEN,
        model_max_length=model.config.context_length,
    )
    tokenizer.save_pretrained(out_dir)
    return out_dir
