"""Each benchmark's plot: one row of axes, drawn by the caller, saved as a PNG."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@contextmanager
def figure(path: Path, columns: int, *, size: tuple[float, float]) -> Iterator[list[Axes]]:
    """`columns` axes side by side; once the caller has drawn on them, saved to `path`.
    (matplotlib is imported here, with a backend that needs no screen, only when a plot is
    made.)"""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, columns, figsize=size, squeeze=False)
    yield list(axes[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
