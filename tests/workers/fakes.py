"""Fakes at the engine's seams: a character tokenizer and a decoder whose KV cache holds ids.

The fake decoder's next token is a function of every token visible through the cache and the
mask, so any mistake in joining, padding, advancing or trimming the batch changes the output.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from workers.runtime import Array, DecoderShape, Ids

ALPHABET = " abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?-_()[]"
VOCAB = len(ALPHABET) + 1  # id 0 is end-of-text


@dataclass
class Encoding:
    ids: list[int]


class CharTokenizer:
    def encode(self, text: str, add_special_tokens: bool = True) -> Encoding:
        return Encoding([ALPHABET.index(c) + 1 for c in text if c in ALPHABET])

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(ALPHABET[i - 1] for i in ids if i > 0)


@dataclass
class FakeDecoder:
    """next = (sum of visible ids + 7 * position of the new token) mod (VOCAB - 1) + 1, or
    end-of-text once a row has seen `eos_after` tokens (0: never)."""

    context_length: int = 64
    eos_after: int = 0
    fail_after_steps: int = 0
    gate: threading.Event | None = None
    step_delay_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)  # where steps ran
    sizes_by_thread: dict[str, list[int]] = field(default_factory=dict)  # batch sizes, in order
    overlapped: bool = False  # two steps were running at the same moment
    _running: int = 0

    def __post_init__(self) -> None:
        self.shape = DecoderShape(
            n_layer=1, n_head=1, head_dim=1, context_length=self.context_length
        )

    def step(
        self, input_ids: Ids, attention_mask: Ids, position_ids: Ids, past: list[Array]
    ) -> tuple[Array, list[Array]]:
        if self.gate is not None:
            self.gate.wait(10)
        self.threads.add(threading.current_thread().name)
        self._running += 1  # each += and -= runs under the GIL
        self.overlapped |= self._running > 1
        try:
            if self.step_delay_s:
                time.sleep(self.step_delay_s)
        finally:
            self._running -= 1
        self.batch_sizes.append(input_ids.shape[0])
        self.sizes_by_thread.setdefault(threading.current_thread().name, []).append(
            input_ids.shape[0]
        )
        if self.fail_after_steps and len(self.batch_sizes) > self.fail_after_steps:
            raise RuntimeError("decoder exploded")
        new = input_ids.astype(np.float32)[:, None, :, None]
        keys = np.concatenate([past[0], new], axis=2)  # (B, 1, P+T, 1)
        visible = keys[:, 0, :, 0] * attention_mask
        seen = attention_mask.sum(1)
        nxt = (visible.sum(1).astype(np.int64) + 7 * position_ids[:, -1]) % (VOCAB - 1) + 1
        if self.eos_after:
            nxt = np.where(seen >= self.eos_after, 0, nxt)
        logits = np.full((input_ids.shape[0], VOCAB), -10.0, np.float32)
        logits[np.arange(len(nxt)), nxt] = 10.0
        return logits, [keys, keys.copy()]


class ListSink:
    def __init__(
        self, cancel_after_chunks: int = 0, fail_on_send: bool = False, send_delay_s: float = 0.0
    ) -> None:
        self.chunks: list[object] = []
        self.done = threading.Event()
        self.cancel_after_chunks = cancel_after_chunks
        self.fail_on_send = fail_on_send
        self.send_delay_s = send_delay_s  # a slow client, or a costly IPC

    def send(self, chunk: object) -> None:
        if self.send_delay_s:
            time.sleep(self.send_delay_s)
        if self.fail_on_send:
            raise ConnectionResetError("client went away")
        self.chunks.append(chunk)
        if getattr(chunk, "final", False):
            self.done.set()

    def cancelled(self) -> bool:
        return bool(self.cancel_after_chunks) and len(self.chunks) >= self.cancel_after_chunks
