"""Canary routing: the share matches the weight, and each caller stays on one side."""

from __future__ import annotations

import pytest

from gateway.errors import NotFound, Unavailable
from gateway.generation.routing import Route, RouteTable, VersionInfo

V1, V2 = VersionInfo(1, 256), VersionInfo(2, 256)


@pytest.mark.parametrize("weight", [0, 10, 50, 90])
def test_the_canary_share_matches_its_weight_and_callers_stick(weight: int) -> None:
    route = Route("m", production=V1, canary=V2, canary_weight=weight, ready={1: V1, 2: V2})
    callers = [f"caller-{i}" for i in range(2000)]
    sides = [route.choose(c)[1] for c in callers]
    share = 100 * sides.count("canary") / len(callers)
    assert abs(share - weight) <= 3
    assert sides == [route.choose(c)[1] for c in callers], "each caller stays on its side"


def test_resolving_models_versions_and_pins() -> None:
    table = RouteTable(db=None, refresh_s=1.0)  # type: ignore[arg-type]
    table.routes = {
        "m": Route("m", production=V1, ready={1: V1, 2: V2}),
        "new": Route("new", production=None, ready={1: V1}),
    }
    assert table.resolve("m", "alice") == (1, 256, "production")
    assert table.resolve("m", "alice", pinned=2) == (2, 256, "pinned")
    with pytest.raises(NotFound, match="no model named 'x'"):
        table.resolve("x", "alice")
    with pytest.raises(NotFound, match="no ready version 7"):
        table.resolve("m", "alice", pinned=7)
    with pytest.raises(Unavailable, match="no production version"):
        table.resolve("new", "alice")
