"""Byte-level BPE tokenizer, trained with `tokenizers` on the cleaned training texts.

Byte-level means every string round-trips (`decode(encode(s)) == s`) and nothing is unknown.
`<|endoftext|>` is token 0: it separates documents in the training stream and ends
generation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOT_TOKEN = "<|endoftext|>"  # noqa: S105 (a token, not a password)
EOT_ID = 0


def train_tokenizer(*, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE with `vocab_size` entries, `<|endoftext|>` first."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    if tokenizer.token_to_id(EOT_TOKEN) != EOT_ID:
        raise RuntimeError(f"{EOT_TOKEN} did not get id {EOT_ID}")
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


def load_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def encode_corpus(
    *, tokenizer: Tokenizer, texts: Sequence[str], batch: int = 256
) -> npt.NDArray[np.int32]:
    """All texts as one int32 token stream, each document followed by `<|endoftext|>`."""
    parts: list[npt.NDArray[np.int32]] = []
    eot = np.array([EOT_ID], dtype=np.int32)
    for start in range(0, len(texts), batch):
        for encoding in tokenizer.encode_batch(
            list(texts[start : start + batch]), add_special_tokens=False
        ):
            parts.append(np.asarray(encoding.ids, dtype=np.int32))
            parts.append(eot)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
