"""The running batch's KV cache: rows join (prefilled) and leave at any decode step.

Rows are left-padded to a common past length P: `mask` (batch, P) marks real positions, and
each row keeps its own next position. Padding is masked out of attention, so a row computes
exactly what it would alone. When rows leave, columns that are padding for every remaining row
are dropped, so the cache never grows past the longest live sequence.
"""

from __future__ import annotations

import numpy as np

from workers.runtime import Array, DecoderShape, Ids


class KVBatch:
    def __init__(self, shape: DecoderShape) -> None:
        self.shape = shape
        self.past: list[Array] = self._empty(0, 0)
        self.mask: Ids = np.zeros((0, 0), np.int64)
        self.positions: Ids = np.zeros(0, np.int64)  # next position per row

    def _empty(self, rows: int, length: int) -> list[Array]:
        s = self.shape
        return [
            np.zeros((rows, s.n_head, length, s.head_dim), np.float32) for _ in range(2 * s.n_layer)
        ]

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    @staticmethod
    def prefill_inputs(prompts: list[list[int]]) -> tuple[Ids, Ids, Ids]:
        """Left-padded ids, mask and positions for a batch of prompts."""
        width = max(len(p) for p in prompts)
        ids = np.zeros((len(prompts), width), np.int64)
        mask = np.zeros((len(prompts), width), np.int64)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = prompt
            mask[row, width - len(prompt) :] = 1
        positions = np.maximum(mask.cumsum(1) - 1, 0)
        return ids, mask, positions

    def join(self, present: list[Array], mask: Ids) -> None:
        """Append prefilled rows (their present cache and mask) below the running rows."""
        width = max(self.length, mask.shape[1])
        old_pad, new_pad = width - self.length, width - mask.shape[1]
        self.past = [
            np.concatenate([_left_pad(a, old_pad), _left_pad(b, new_pad)], axis=0)
            for a, b in zip(self.past, present, strict=True)
        ]
        self.mask = np.concatenate(
            [np.pad(self.mask, ((0, 0), (old_pad, 0))), np.pad(mask, ((0, 0), (new_pad, 0)))],
            axis=0,
        )
        self.positions = np.concatenate([self.positions, mask.sum(1)])

    def decode_inputs(self) -> tuple[Ids, Ids]:
        """The mask (with the new column) and positions for one decode step of every row."""
        mask = np.concatenate([self.mask, np.ones((self.rows, 1), np.int64)], axis=1)
        return mask, self.positions[:, None]

    def advance(self, present: list[Array], mask: Ids) -> None:
        self.past, self.mask = present, mask
        self.positions = self.positions + 1

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (in this order), then drop columns no remaining row uses."""
        index = np.asarray(rows, dtype=np.int64)
        self.past = [p[index] for p in self.past]
        self.mask = self.mask[index]
        self.positions = self.positions[index]
        if self.rows == 0:
            self.past, self.mask = self._empty(0, 0), np.zeros((0, 0), np.int64)
            return
        used = np.flatnonzero(self.mask.any(axis=0))
        first = int(used[0]) if used.size else self.length
        if first:
            self.past = [p[:, :, first:] for p in self.past]
            self.mask = self.mask[:, first:]


def _left_pad(array: Array, pad: int) -> Array:
    if pad == 0:
        return array
    return np.pad(array, ((0, 0), (0, 0), (pad, 0), (0, 0)))
