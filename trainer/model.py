"""A decoder-only transformer in the GPT-2 layout, with an explicit KV-cache inference path.

Learned token and position embeddings, pre-LayerNorm blocks (causal self-attention, GELU MLP),
a final LayerNorm and an LM head tied to the token embedding. `forward` is the training path;
`forward_with_cache` takes and returns the per-layer key/value cache, an attention mask (1 real,
0 padding; left padding supported) and explicit positions, and is what ONNX export traces.
Parameter names follow Hugging Face's GPT2LMHeadModel so `export_hf` maps them one to one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

# Masked attention scores: large and finite, so fully masked (padding) rows never become NaN.
MASKED = -1e9
LAYER_NORM_EPS = 1e-5

KVCache = list[tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    context_length: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GPTConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


class SelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)  # each (B, T, C)
        shape = (b, t, self.n_head, c // self.n_head)
        return (
            q.view(shape).transpose(1, 2),
            k.view(shape).transpose(1, 2),
            v.view(shape).transpose(1, 2),
        )

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self._heads(x)  # (B, H, T, D)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        out: Tensor = self.c_proj(y.transpose(1, 2).reshape(b, t, c))
        return out

    def forward_cached(
        self, x: Tensor, bias: Tensor, past_k: Tensor, past_v: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, C); bias (B, 1, T, P+T) additive; past (B, H, P, D) -> y, present k, v."""
        b, t, c = x.shape
        q, k, v = self._heads(x)
        k = torch.cat([past_k, k], dim=2)  # (B, H, P+T, D)
        v = torch.cat([past_v, v], dim=2)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1])) + bias  # (B, H, T, P+T)
        y = torch.softmax(scores, dim=-1) @ v  # (B, H, T, D)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c)), k, v


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # exact (erf) GELU
        return out


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=LAYER_NORM_EPS)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=LAYER_NORM_EPS)
        self.mlp = MLP(config)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.resid_dropout(self.attn(self.ln_1(x)))
        out: Tensor = x + self.mlp(self.ln_2(x))
        return out

    def forward_cached(
        self, x: Tensor, bias: Tensor, past_k: Tensor, past_v: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        y, k, v = self.attn.forward_cached(self.ln_1(x), bias, past_k, past_v)
        x = x + y
        return x + self.mlp(self.ln_2(x)), k, v


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.context_length, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=LAYER_NORM_EPS)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied embeddings
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def blocks(self) -> list[Block]:
        return [cast(Block, b) for b in self.h]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) int64 -> logits (B, T, V); loss is mean cross-entropy (ignore_index -1)."""
        _, t = idx.shape
        if t > self.config.context_length:
            raise ValueError(
                f"sequence of {t} tokens exceeds the context of {self.config.context_length}"
            )
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
        )
        return logits, loss

    def forward_with_cache(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor,
        past_key_values: KVCache,
    ) -> tuple[Tensor, KVCache]:
        """One prefill or decode step.

        input_ids (B, T); attention_mask (B, P+T), 1 real / 0 padding; position_ids (B, T);
        past_key_values: per layer (k, v), each (B, H, P, D). Returns logits (B, T, V) and the
        present cache, per layer (B, H, P+T, D).
        """
        t = input_ids.shape[1]
        total = attention_mask.shape[1]  # P + T
        past = total - t
        # Query i (absolute column past+i) sees key j when j <= past+i and key j is not padding.
        q_pos = torch.arange(t, device=input_ids.device).unsqueeze(1) + past  # (T, 1)
        k_pos = torch.arange(total, device=input_ids.device).unsqueeze(0)  # (1, P+T)
        visible = (k_pos <= q_pos).unsqueeze(0) & attention_mask.bool().unsqueeze(1)  # (B, T, P+T)
        dtype = self.wte.weight.dtype
        masked = max(MASKED, torch.finfo(dtype).min)  # -1e9 would round to -inf in fp16
        bias = torch.where(visible, 0.0, masked).to(dtype).unsqueeze(1)  # (B, 1, T, P+T)
        x = self.wte(input_ids) + self.wpe(position_ids)  # (B, T, C)
        present: KVCache = []
        for block, (past_k, past_v) in zip(self.blocks, past_key_values, strict=True):
            x, k, v = block.forward_cached(x, bias, past_k, past_v)
            present.append((k, v))
        return self.lm_head(self.ln_f(x)), present

    def empty_cache(self, batch: int, device: torch.device | None = None) -> KVCache:
        """A zero-length cache for `batch` sequences."""
        c = self.config
        shape = (batch, c.n_head, 0, c.head_dim)
        dtype = self.wte.weight.dtype
        empty = torch.zeros(shape, dtype=dtype, device=device)
        return [(empty, empty) for _ in range(c.n_layer)]
