"""A preset small enough for tests: trains in a fraction of a second per few steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

PRESET_TOML = """
description = "test preset"
[data]
val_fraction = 0.2
[tokenizer]
vocab_size = 64
[model]
context_length = 32
n_layer = 2
n_head = 2
n_embd = 32
[training]
batch_size = 8
max_steps = 60
max_minutes = 0
learning_rate = 1e-2
min_learning_rate = 1e-3
warmup_steps = 5
eval_interval = 20
eval_batches = 2
checkpoint_interval = 10
seed = 7
precision = "fp32"
"""


def write_preset(directory: Path) -> Path:
    path = directory / "test-preset.toml"
    path.write_text(PRESET_TOML)
    return path


def token_streams(
    vocab: int = 64, length: int = 6000
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """A learnable stream: short counting runs with a little noise (documents end with 0)."""
    rng = np.random.default_rng(0)
    parts: list[npt.NDArray[np.int32]] = []
    while sum(p.size for p in parts) < length:
        start = int(rng.integers(1, vocab - 12))
        run = np.arange(start, start + int(rng.integers(5, 12)), dtype=np.int32)
        parts.append(np.append(run, 0).astype(np.int32))
    stream = np.concatenate(parts)[:length]
    cut = int(len(stream) * 0.8)
    return stream[:cut], stream[cut:]
