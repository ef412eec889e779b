"""Drift watch: does the traffic still look like the data the version was trained on?

The gateway keeps a histogram of prompt lengths (characters) per model version
(`tollgate_prompt_chars`). Every `drift_interval_s` a job compares it with the length
distribution of the version's training documents, which the registry records with each version
(`data_report.length_quantiles`: the 0th to 100th percentiles), by the two-sample
Kolmogorov-Smirnov statistic: the largest gap between the two cumulative distributions,
evaluated at the histogram's bucket bounds (the traffic is only known per bucket). It exports
the statistic (`tollgate_prompt_drift_ks`, 0 = same shape, 1 = disjoint), its asymptotic
p-value and the number of prompts behind it, so an alert can fire when traffic no longer looks
like the training data.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
from collections.abc import Sequence

from gateway.config import GatewaySettings
from gateway.generation.routing import RouteTable
from gateway.server.background import Every
from gateway.telemetry.metrics import Metrics
from registry import catalog
from registry.db import RegistryDatabase, reading
from registry.errors import RegistryError

log = logging.getLogger("tollgate.gateway.drift")


def reference_cdf(quantiles: Sequence[float], x: float) -> float:
    """The training lengths' cumulative distribution at `x`, from its 101 percentiles
    (linear between percentiles)."""
    if not quantiles or x < quantiles[0]:
        return 0.0
    if x >= quantiles[-1]:
        return 1.0
    i = bisect.bisect_right(quantiles, x) - 1  # quantiles[i] <= x < quantiles[i + 1]
    low, high = quantiles[i], quantiles[i + 1]
    step = 1 / (len(quantiles) - 1)
    within = (x - low) / (high - low) if high > low else 1.0
    return min(1.0, (i + within) * step)


def ks_statistic(
    quantiles: Sequence[float], bounds: Sequence[float], cumulative: Sequence[float]
) -> float:
    """The largest gap between the reference CDF and the traffic's, the latter known at
    `bounds` (upper bucket bounds, ascending) as cumulative counts."""
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return 0.0
    return max(
        abs(count / total - reference_cdf(quantiles, bound))
        for bound, count in zip(bounds, cumulative, strict=True)
        if math.isfinite(bound)
    )


def ks_p_value(statistic: float, n: float, m: float) -> float:
    """The asymptotic two-sample Kolmogorov-Smirnov p-value (Stephens' correction)."""
    if statistic <= 0 or n <= 0 or m <= 0:
        return 1.0
    effective = math.sqrt(n * m / (n + m))
    lam = (effective + 0.12 + 0.11 / effective) * statistic
    total = sum(2.0 * (-1.0) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return float(min(1.0, max(0.0, total)))


class DriftWatch:
    def __init__(
        self,
        settings: GatewaySettings,
        db: RegistryDatabase,
        routes: RouteTable,
        metrics: Metrics,
    ) -> None:
        self.settings, self.db, self.routes, self.metrics = settings, db, routes, metrics
        self._reference: dict[tuple[str, int], tuple[list[float], int]] = {}
        self._job = Every(settings.drift_interval_s, self.measure, name="tollgate-drift", log=log)

    async def start(self) -> None:
        self._job.start()

    async def stop(self) -> None:
        await self._job.stop()

    async def reference(self, model: str, version: int) -> tuple[list[float], int]:
        """The version's training length percentiles and record count (read once: a
        version's data never changes)."""
        key = (model, version)
        if key not in self._reference:

            def read() -> tuple[list[float], int]:
                with reading(self.db) as session:
                    report = catalog.get_version(
                        session=session, model=model, version=version
                    ).data_report
                quantiles = [float(q) for q in report.get("length_quantiles", [])]
                records = int(report.get("train_records", 0)) + int(report.get("val_records", 0))
                return quantiles, records or len(quantiles)

            self._reference[key] = await asyncio.to_thread(read)
        return self._reference[key]

    def traffic(self) -> dict[tuple[str, int], tuple[list[float], list[float]]]:
        """Per (model, version): the histogram's bucket bounds and cumulative counts."""
        found: dict[tuple[str, int], dict[float, float]] = {}
        for family in self.metrics.prompt_chars.collect():
            for sample in family.samples:
                if not sample.name.endswith("_bucket"):
                    continue
                labels = sample.labels
                key = (labels["model"], int(labels["version"]))
                found.setdefault(key, {})[float(labels["le"])] = sample.value
        return {
            key: (sorted(buckets), [buckets[b] for b in sorted(buckets)])
            for key, buckets in found.items()
        }

    async def measure(self) -> None:
        """One round: the statistic for every version that has served prompts."""
        for (model, version), (bounds, cumulative) in self.traffic().items():
            try:
                quantiles, records = await self.reference(model, version)
            except RegistryError as exc:
                log.warning("no training lengths for %s v%s: %s", model, version, exc)
                continue
            if len(quantiles) < 2 or not cumulative or cumulative[-1] <= 0:
                continue
            statistic = ks_statistic(quantiles, bounds, cumulative)
            labels = (model, str(version))
            self.metrics.prompt_drift.labels(*labels).set(statistic)
            self.metrics.prompt_drift_p.labels(*labels).set(
                ks_p_value(statistic, cumulative[-1], records)
            )
            self.metrics.prompt_drift_samples.labels(*labels).set(cumulative[-1])
