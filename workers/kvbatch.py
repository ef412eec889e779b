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
        old_rows, new_rows = self.rows, mask.shape[0]
        s = self.shape
        # One copy per array: each side lands right-aligned in a zeroed block (the padding).
        joined = []
        for old, new in zip(self.past, present, strict=True):
            block = np.zeros((old_rows + new_rows, s.n_head, width, s.head_dim), np.float32)
            block[:old_rows, :, width - old.shape[2] :] = old
            block[old_rows:, :, width - new.shape[2] :] = new
            joined.append(block)
        self.past = joined
        merged = np.zeros((old_rows + new_rows, width), np.int64)
        merged[:old_rows, width - self.length :] = self.mask
        merged[old_rows:, width - mask.shape[1] :] = mask
        self.mask = merged
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
        if not rows:
            self.past, self.mask = self._empty(0, 0), np.zeros((0, 0), np.int64)
            self.positions = np.zeros(0, np.int64)
            return
        index = np.asarray(rows, dtype=np.int64)
        mask = self.mask[index]
        used = np.flatnonzero(mask.any(axis=0))
        first = int(used[0]) if used.size else mask.shape[1]
        # Rows and columns in one indexing operation: one contiguous copy per array.
        self.past = [p[index, :, first:] for p in self.past]
        self.mask = mask[:, first:]
        self.positions = self.positions[index]
