"""How many lanes a worker decodes with, and how many ONNX Runtime threads each gets."""

from __future__ import annotations

import pytest

from workers.runtime import plan_lanes


@pytest.mark.parametrize(
    ("asked", "device", "max_active", "cores", "planned"),
    [
        ((0, 0), "cpu", 32, 2, (2, 1)),  # a lane per core, one thread each
        ((0, 0), "cpu", 32, 16, (8, 2)),  # at least 4 slots per lane; cores shared out
        ((0, 0), "cpu", 4, 2, (1, 0)),  # too few slots to split: ONNX Runtime chooses
        ((0, 0), "cpu", 1, 8, (1, 0)),
        ((3, 0), "cpu", 32, 2, (3, 1)),  # asked for: kept, at least one thread each
        ((0, 2), "cpu", 32, 2, (2, 2)),
        ((4, 0), "cpu", 2, 8, (2, 4)),  # never more lanes than slots
        ((1, 0), "cpu", 32, 8, (1, 0)),
        ((0, 0), "cuda", 32, 16, (1, 0)),  # a GPU's steps would only take turns
        ((2, 0), "cuda", 32, 16, (2, 0)),
    ],
)
def test_plan(
    asked: tuple[int, int], device: str, max_active: int, cores: int, planned: tuple[int, int]
) -> None:
    lanes, threads = asked
    assert (
        plan_lanes(lanes=lanes, threads=threads, device=device, max_active=max_active, cores=cores)
        == planned
    )


def test_this_machine_plans_from_the_cores_it_may_use() -> None:
    lanes, threads = plan_lanes(lanes=0, threads=0, device="cpu", max_active=1024)
    assert lanes >= 1
    assert threads >= 1 if lanes > 1 else threads == 0
