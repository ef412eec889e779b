"""Canary gates: judge a canary against production from live traffic, and pull it when bad.

Every generation this gateway serves leaves a sample with its model version: whether it
failed on the worker's side (errors a caller causes, such as a refused prompt, and callers who
leave do not count), its time to first token, and its mean inter-token latency. Over the last
`window_s` seconds the canary fails when its error rate is above `max_error_rate`, or its
median time to first token or inter-token latency is above `max_latency_ratio` times
production's. Fewer than `min_requests` samples on either side is "inconclusive", never
"pass". A failing canary gets weight 0 at once, through the same path as an operator's change,
with an alias event whose reason carries the figures. Thresholds and window are settings,
per model if needed (`TOLLGATE_CANARY_GATES`). Each replica judges the traffic it served.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.config import GatewaySettings
from gateway.errors import GatewayError
from gateway.generation.routing import Route, RouteTable, VersionInfo
from gateway.server.background import Every
from gateway.telemetry.metrics import Metrics

log = logging.getLogger("tollgate.gateway.gates")

GATE_ACTOR = "tollgate:canary-gate"


@dataclass(frozen=True)
class GateRules:
    window_s: float
    min_requests: int
    max_error_rate: float
    max_latency_ratio: float


@dataclass(frozen=True)
class Sample:
    at: float
    failed: bool
    ttft_s: float | None
    itl_s: float | None


@dataclass(frozen=True)
class Figures:
    requests: int
    errors: int
    ttft_p50_ms: float | None
    itl_p50_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "ttft_p50_ms": self.ttft_p50_ms,
            "itl_p50_ms": self.itl_p50_ms,
        }


@dataclass(frozen=True)
class Verdict:
    status: str  # "pass", "fail", "inconclusive", or "none" (no canary taking traffic)
    reason: str
    version: int | None = None
    canary: Figures | None = None
    production: Figures | None = None
    rules: GateRules | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "version": self.version,
            "canary": self.canary.as_dict() if self.canary else None,
            "production": self.production.as_dict() if self.production else None,
            "rules": self.rules.__dict__ if self.rules else None,
        }


def _median_ms(values: list[float]) -> float | None:
    return round(statistics.median(values) * 1000, 3) if values else None


def figures(samples: list[Sample]) -> Figures:
    return Figures(
        requests=len(samples),
        errors=sum(s.failed for s in samples),
        ttft_p50_ms=_median_ms([s.ttft_s for s in samples if s.ttft_s is not None]),
        itl_p50_ms=_median_ms([s.itl_s for s in samples if s.itl_s is not None]),
    )


def judge(canary: Figures, production: Figures, rules: GateRules) -> tuple[str, str]:
    """(status, reason) for a canary's figures beside production's over one window."""
    window = f"over the last {rules.window_s:g} s"
    if canary.requests < rules.min_requests:
        return "inconclusive", (
            f"{canary.requests} canary requests {window}; at least {rules.min_requests} needed"
        )
    if canary.error_rate > rules.max_error_rate:
        return "fail", (
            f"canary error rate {canary.error_rate:.1%} ({canary.errors} of {canary.requests}) "
            f"{window} is above {rules.max_error_rate:.1%}"
        )
    if production.requests < rules.min_requests:
        return "inconclusive", (
            f"{production.requests} production requests {window}; at least "
            f"{rules.min_requests} needed to compare latency"
        )
    for name, c, p in (
        ("time to first token", canary.ttft_p50_ms, production.ttft_p50_ms),
        ("inter-token latency", canary.itl_p50_ms, production.itl_p50_ms),
    ):
        if c is not None and p and c / p > rules.max_latency_ratio:
            return "fail", (
                f"canary median {name} {c:.1f} ms is {c / p:.2f}x production's {p:.1f} ms "
                f"{window}, above {rules.max_latency_ratio:g}x"
            )
    return "pass", (
        f"error rate {canary.error_rate:.1%} and latency within bounds over "
        f"{canary.requests} canary and {production.requests} production requests {window}"
    )


@dataclass
class _Series:
    samples: deque[Sample] = field(default_factory=deque)


def _live_canary(route: Route | None) -> VersionInfo | None:
    """The route's canary if it takes traffic (a weight above 0), else None."""
    return route.canary if route is not None and route.canary_weight > 0 else None


class CanaryGates:
    def __init__(
        self,
        settings: GatewaySettings,
        routes: RouteTable,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.routes, self.clock = settings, routes, clock
        self.metrics: Metrics | None = None  # set by the app
        self._series: dict[str, dict[int, _Series]] = {}  # model -> version -> samples
        self._rules: dict[str, GateRules] = {}
        # Per model: the (canary, production) versions last seen, and since when.
        self._setups: dict[str, tuple[tuple[int | None, int | None], float]] = {}
        self._job = Every(
            settings.canary_check_interval_s, self.check_all, name="tollgate-canary-gates", log=log
        )
        self.pull: Callable[[str, int, str], Any] | None = None  # set by the app

    def rules(self, model: str) -> GateRules:
        """The model's gate rules (its own, else the defaults); made once per model."""
        known = self._rules.get(model)
        if known is not None:
            return known
        s = self.settings
        own = s.canary_gates.get(model, {})
        rules = self._rules[model] = GateRules(
            window_s=float(own.get("window_s", s.canary_window_s)),
            min_requests=int(own.get("min_requests", s.canary_min_requests)),
            max_error_rate=float(own.get("max_error_rate", s.canary_max_error_rate)),
            max_latency_ratio=float(own.get("max_latency_ratio", s.canary_max_latency_ratio)),
        )
        return rules

    def record(
        self, model: str, version: int, *, failed: bool, ttft_s: float | None, itl_s: float | None
    ) -> None:
        """Keep one request's outcome, while the model has a canary taking traffic.

        Without one there is nothing to judge, and what is served then never counts later
        (only what canary and production serve side by side does), so nothing is kept: a
        gateway without a canary holds no samples, however busy."""
        route = self.routes.routes.get(model)
        self._side_by_side_since(model, route)
        if _live_canary(route) is None:
            self._series.pop(model, None)
            return
        series = self._series.setdefault(model, {}).setdefault(version, _Series())
        series.samples.append(Sample(self.clock(), failed, ttft_s, itl_s))
        self._trim(series, self.rules(model).window_s)

    def _trim(self, series: _Series, window_s: float) -> None:
        horizon = self.clock() - window_s
        while series.samples and series.samples[0].at < horizon:
            series.samples.popleft()

    def window(self, model: str, version: int, since: float) -> list[Sample]:
        """The version's samples within the model's window and taken at `since` or later."""
        series = self._series.get(model, {}).get(version)
        if series is None:
            return []
        self._trim(series, self.rules(model).window_s)
        return [s for s in series.samples if s.at >= since]

    def _side_by_side_since(self, model: str, route: Route | None) -> float:
        """When this replica first saw the model's current canary and production versions.

        Only what the two served side by side is compared: a version's samples from before
        (the canary's own time as production, production's time alone) were taken under
        another load, and on a busy machine that alone can make one look twice as slow."""
        setup = (
            route.canary.version if route and route.canary else None,
            route.production.version if route and route.production else None,
        )
        seen = self._setups.get(model)
        if seen is None or seen[0] != setup:
            seen = self._setups[model] = (setup, self.clock())
        return seen[1]

    def verdict(self, model: str) -> Verdict:
        route = self.routes.routes.get(model)
        live = _live_canary(route)
        if route is None or live is None:
            return Verdict("none", "no canary is taking traffic")
        rules = self.rules(model)
        since = self._side_by_side_since(model, route)
        canary = figures(self.window(model, live.version, since))
        production = figures(
            self.window(model, route.production.version, since) if route.production else []
        )
        status, reason = judge(canary, production, rules)
        return Verdict(status, reason, live.version, canary, production, rules)

    def forget(self, model: str, version: int) -> None:
        self._series.get(model, {}).pop(version, None)

    # -- the watcher ------------------------------------------------------------------------
    async def start(self) -> None:
        self._job.start()

    async def stop(self) -> None:
        await self._job.stop()

    async def check_all(self) -> None:
        """One round of the watcher: every routed model's gate, each on its own."""
        for model in list(self.routes.routes):
            try:
                await self.check(model)
            except GatewayError as exc:  # e.g. another replica pulled it first (409)
                log.info("canary gate of %s: %s", model, exc.message)
            except Exception:  # one model's failure must not skip the others
                log.exception("canary gate of %s failed; trying again next round", model)

    async def check(self, model: str) -> Verdict:
        """Judge `model`'s canary now; pull it (weight 0) when it fails."""
        verdict = self.verdict(model)
        if self.metrics is not None:
            self.metrics.canary_rollbacks.labels(model)  # a 0 series, so alerts see the model
            if verdict.status != "none":
                self.metrics.canary_verdicts.labels(model, verdict.status).inc()
        if verdict.status == "fail" and verdict.version is not None and self.pull is not None:
            figures_text = (
                f"canary {verdict.canary.as_dict() if verdict.canary else {}}, "
                f"production {verdict.production.as_dict() if verdict.production else {}}"
            )
            reason = f"automatic rollback: {verdict.reason}; figures: {figures_text}"
            log.warning("canary %s v%s failed its gate: %s", model, verdict.version, reason)
            await self.pull(model, verdict.version, reason)
            self.forget(model, verdict.version)
            if self.metrics is not None:
                self.metrics.canary_rollbacks.labels(model).inc()
        return verdict
