"""Canary gates on a fake clock: the verdicts, inconclusive with too little data, the pull."""

from __future__ import annotations

import asyncio

from gateway.config import GatewaySettings
from gateway.control.canary_gates import CanaryGates, Figures, GateRules, judge
from gateway.generation.routing import Route, RouteTable, VersionInfo

RULES = GateRules(window_s=60, min_requests=10, max_error_rate=0.05, max_latency_ratio=2.0)


def test_too_little_data_is_inconclusive_never_pass() -> None:
    few = Figures(requests=9, errors=0, ttft_p50_ms=5, itl_p50_ms=1)
    plenty = Figures(requests=100, errors=0, ttft_p50_ms=5, itl_p50_ms=1)
    assert judge(few, plenty, RULES)[0] == "inconclusive"
    # Enough canary traffic, but too little production traffic to compare latency against.
    assert judge(plenty, few, RULES)[0] == "inconclusive"


def test_errors_or_slowness_fail_and_the_reason_carries_the_figures() -> None:
    production = Figures(requests=100, errors=1, ttft_p50_ms=10, itl_p50_ms=2)
    failing = Figures(requests=20, errors=2, ttft_p50_ms=10, itl_p50_ms=2)
    status, reason = judge(failing, production, RULES)
    assert status == "fail"
    assert "10.0% (2 of 20)" in reason
    slow = Figures(requests=20, errors=0, ttft_p50_ms=25, itl_p50_ms=2)
    status, reason = judge(slow, production, RULES)
    assert (status, "2.50x") == ("fail", reason.split(" is ")[1][:5])
    slow_tokens = Figures(requests=20, errors=0, ttft_p50_ms=10, itl_p50_ms=5)
    assert judge(slow_tokens, production, RULES)[0] == "fail"
    healthy = Figures(requests=20, errors=1, ttft_p50_ms=15, itl_p50_ms=3)
    assert judge(healthy, production, RULES)[0] == "pass"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _gates(clock: _Clock, **overrides: object) -> CanaryGates:
    settings = GatewaySettings(
        canary_window_s=60, canary_min_requests=10, canary_gates={"gen": {"window_s": 30}}
    ).model_copy(update=overrides)
    routes = RouteTable.__new__(RouteTable)
    routes.routes = {
        "gen": Route(
            model="gen",
            production=VersionInfo(1, 256),
            canary=VersionInfo(2, 256),
            canary_weight=10,
        )
    }
    return CanaryGates(settings, routes, clock=clock)


def test_the_window_forgets_old_samples_and_per_model_rules_apply() -> None:
    clock = _Clock()
    gates = _gates(clock)
    assert gates.rules("gen").window_s == 30
    assert gates.rules("other").window_s == 60
    for _ in range(10):
        gates.record("gen", 2, failed=True, ttft_s=None, itl_s=None)
        gates.record("gen", 1, failed=False, ttft_s=0.01, itl_s=0.001)
    assert gates.verdict("gen").status == "fail"
    clock.now += 31  # past the model's 30 s window: nothing left to judge
    verdict = gates.verdict("gen")
    assert verdict.status == "inconclusive"
    assert verdict.canary is not None
    assert verdict.canary.requests == 0


def test_a_failing_canary_is_pulled_once_with_the_figures() -> None:
    clock = _Clock()
    gates = _gates(clock)
    pulled: list[tuple[str, int, str]] = []

    async def pull(model: str, version: int, reason: str) -> None:
        pulled.append((model, version, reason))

    gates.pull = pull
    for _ in range(12):
        gates.record("gen", 2, failed=True, ttft_s=None, itl_s=None)
        gates.record("gen", 1, failed=False, ttft_s=0.01, itl_s=0.001)
    verdict = asyncio.run(gates.check("gen"))
    assert verdict.status == "fail"
    assert len(pulled) == 1
    model, version, reason = pulled[0]
    assert (model, version) == ("gen", 2)
    assert reason.startswith("automatic rollback: canary error rate 100.0% (12 of 12)")
    assert "'requests': 12" in reason
    # Its samples are forgotten: the next check has nothing to judge and pulls nothing.
    assert asyncio.run(gates.check("gen")).status == "inconclusive"
    assert len(pulled) == 1


def test_no_canary_taking_traffic_means_nothing_to_judge() -> None:
    gates = _gates(_Clock())
    gates.routes.routes["gen"] = Route(model="gen", production=VersionInfo(1, 256))
    assert gates.verdict("gen").status == "none"
    assert gates.verdict("unknown").status == "none"


def test_only_what_canary_and_production_served_side_by_side_is_compared() -> None:
    clock = _Clock()
    gates = _gates(clock, canary_gates={})
    gates.routes.routes["gen"] = Route(model="gen", production=VersionInfo(2, 256))
    # v2 was production alone, under a heavy load: slow.
    for _ in range(20):
        gates.record("gen", 2, failed=False, ttft_s=0.05, itl_s=0.004)
    clock.now += 5
    gates.routes.routes["gen"] = Route(
        model="gen", production=VersionInfo(1, 256), canary=VersionInfo(2, 256), canary_weight=10
    )
    assert gates.verdict("gen").status == "inconclusive", "v2's samples as production don't count"
    # Side by side, v2 is as fast as v1: the gate passes it.
    for _ in range(12):
        gates.record("gen", 2, failed=False, ttft_s=0.01, itl_s=0.001)
        gates.record("gen", 1, failed=False, ttft_s=0.01, itl_s=0.001)
    verdict = gates.verdict("gen")
    assert verdict.status == "pass", verdict.reason
    assert verdict.canary is not None
    assert verdict.canary.requests == 12
    # Roles swapped (v1 the canary now): a new comparison, from nothing.
    clock.now += 1
    gates.routes.routes["gen"] = Route(
        model="gen", production=VersionInfo(2, 256), canary=VersionInfo(1, 256), canary_weight=10
    )
    swapped = gates.verdict("gen")
    assert swapped.status == "inconclusive"
    assert swapped.canary is not None
    assert swapped.canary.requests == 0


def test_without_a_canary_taking_traffic_no_samples_are_kept() -> None:
    """A gateway without a canary, however busy, holds no samples; a canary set up later
    starts from nothing either way."""
    clock = _Clock()
    gates = _gates(clock, canary_gates={})
    for _ in range(5):  # with the canary: kept
        gates.record("gen", 2, failed=False, ttft_s=0.01, itl_s=0.001)
    assert gates._series
    gates.routes.routes["gen"] = Route(model="gen", production=VersionInfo(1, 256))
    for _ in range(1000):
        gates.record("gen", 1, failed=False, ttft_s=0.01, itl_s=0.001)
    assert gates._series == {}
    gates.routes.routes["gen"] = Route(
        model="gen", production=VersionInfo(1, 256), canary=VersionInfo(2, 256), canary_weight=0
    )
    gates.record("gen", 1, failed=False, ttft_s=0.01, itl_s=0.001)
    assert gates._series == {}, "a canary at weight 0 takes no traffic: nothing to judge"
