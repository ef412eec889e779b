"""The gateway's metrics: children looked up once, exported as prometheus-client exports them."""

from __future__ import annotations

from prometheus_client import generate_latest

from gateway.telemetry.metrics import Metrics


def _sample(metrics: Metrics, name: str, labels: str) -> float | None:
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_label_set_is_one_child_whichever_way_it_is_named() -> None:
    metrics = Metrics()
    first = metrics.tokens.labels("gen", "prompt")
    assert metrics.tokens.labels("gen", "prompt") is first
    first.inc(3)
    metrics.tokens.labels(model="gen", kind="prompt").inc(2)
    metrics.first_token.labels("gen", 1).observe(0.01)
    metrics.first_token.labels("gen", "1").observe(0.02)  # the same series as version 1
    assert _sample(metrics, "tollgate_tokens_total", 'kind="prompt",model="gen"') == 5
    assert (
        _sample(metrics, "tollgate_time_to_first_token_seconds_count", 'model="gen",version="1"')
        == 2
    )


def test_a_removed_child_is_not_handed_out_again() -> None:
    metrics = Metrics()
    old = metrics.prompt_drift.labels("gen", "1")
    old.set(0.5)
    metrics.prompt_drift.remove("gen", "1")
    assert _sample(metrics, "tollgate_prompt_drift_ks", 'model="gen",version="1"') is None
    new = metrics.prompt_drift.labels("gen", "1")
    assert new is not old
    new.set(0.25)
    assert _sample(metrics, "tollgate_prompt_drift_ks", 'model="gen",version="1"') == 0.25
    metrics.prompt_drift.clear()
    assert metrics.prompt_drift.labels("gen", "1") is not new
