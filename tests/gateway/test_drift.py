"""The drift statistic: the same distribution scores near 0, a shifted one near 1."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from gateway.control.drift import ks_p_value, ks_statistic, reference_cdf

BOUNDS = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, float("inf")]


def _histogram(values: NDArray[np.float64]) -> list[float]:
    return [float((values <= b).sum()) for b in BOUNDS]


def _quantiles(values: NDArray[np.float64]) -> list[float]:
    return [float(q) for q in np.percentile(values, np.arange(101), method="nearest")]


def test_the_reference_cdf_follows_the_percentiles() -> None:
    quantiles = [float(q) for q in range(0, 101)]  # lengths 0..100, uniform
    assert reference_cdf(quantiles, -1) == 0.0
    assert reference_cdf(quantiles, 50) == pytest.approx(0.5)
    assert reference_cdf(quantiles, 50.5) == pytest.approx(0.505)
    assert reference_cdf(quantiles, 1000) == 1.0


def test_traffic_like_the_training_data_scores_low_and_unlike_it_high() -> None:
    rng = np.random.default_rng(7)
    training = rng.lognormal(7, 1, 5000)
    same = rng.lognormal(7, 1, 2000)
    short = rng.lognormal(3, 0.5, 2000)  # much shorter prompts
    quantiles = _quantiles(training)
    low = ks_statistic(quantiles, BOUNDS, _histogram(same))
    high = ks_statistic(quantiles, BOUNDS, _histogram(short))
    assert low < 0.05
    assert high > 0.9
    assert ks_p_value(high, 2000, 5000) < 1e-6
    assert ks_p_value(low, 2000, 5000) > ks_p_value(high, 2000, 5000)
    assert ks_statistic(quantiles, BOUNDS, [0.0] * len(BOUNDS)) == 0.0
