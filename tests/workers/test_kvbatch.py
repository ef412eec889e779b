"""The running batch's cache: rows join right-aligned, leave, and dead columns go."""

from __future__ import annotations

import numpy as np

from workers.kvbatch import KVBatch
from workers.runtime import DecoderShape

SHAPE = DecoderShape(n_layer=2, n_head=3, head_dim=4, context_length=64)


def _present(rows: int, length: int, seed: int) -> list[np.ndarray]:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal((rows, SHAPE.n_head, length, SHAPE.head_dim)).astype(np.float32)
        for _ in range(2 * SHAPE.n_layer)
    ]


def test_rows_join_right_aligned_and_leave_with_the_columns_nobody_uses() -> None:
    batch = KVBatch(SHAPE)
    first = _present(2, 5, seed=1)
    batch.join(first, np.ones((2, 5), np.int64))
    second = _present(3, 3, seed=2)
    second_mask = np.array([[0, 1, 1], [1, 1, 1], [0, 0, 1]], np.int64)
    batch.join(second, second_mask)

    assert (batch.rows, batch.length) == (5, 5)
    assert batch.mask.tolist() == [
        [1] * 5,
        [1] * 5,
        [0, 0, 0, 1, 1],
        [0, 0, 1, 1, 1],
        [0] * 4 + [1],
    ]
    assert batch.positions.tolist() == [5, 5, 2, 3, 1]
    for joined, old, new in zip(batch.past, first, second, strict=True):
        assert joined.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(joined[:2], old)
        np.testing.assert_array_equal(joined[2:, :, 2:], new)
        assert not joined[2:, :, :2].any(), "padding is zeros"

    batch.keep([4, 2])  # the longer rows leave: the three leading columns serve nobody now
    assert (batch.rows, batch.length) == (2, 2)
    assert batch.mask.tolist() == [[0, 1], [1, 1]]
    assert batch.positions.tolist() == [1, 2]
    for kept, new in zip(batch.past, second, strict=True):
        assert kept.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(kept, new[[2, 0], :, 1:])

    batch.keep([])
    assert (batch.rows, batch.length) == (0, 0)
    batch.join(first, np.ones((2, 5), np.int64))
    assert (batch.rows, batch.length) == (2, 5)
