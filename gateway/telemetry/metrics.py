"""Prometheus metrics of one gateway process, on a registry of its own (no global state).

Label sets are bounded: routes are templates, statuses are numbers, models and versions come
from the registry, error kinds from a fixed list.
"""

from __future__ import annotations

from typing import Any, Self

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client import Counter as _Counter
from prometheus_client import Gauge as _Gauge
from prometheus_client import Histogram as _Histogram

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _KnownChildren:
    """`labels(...)` answered from a dict of the children already made.

    prometheus-client checks the arguments, turns each value into a string and takes a lock
    on every call, about 2 µs; a request makes eight such calls. The children themselves, and
    so what is exported, are prometheus-client's own. Label sets here are bounded, so is the
    dict; removing or clearing children empties it."""

    def labels(self, *values: object, **by_name: object) -> Self:
        if by_name:
            return super().labels(*values, **by_name)  # type: ignore[misc, no-any-return]
        known: dict[tuple[object, ...], Self] = self.__dict__.setdefault("_known", {})
        child: Self | None = known.get(values)
        if child is None:
            child = super().labels(*values)  # type: ignore[misc]
            known[values] = child
        return child

    def remove(self, *values: Any) -> None:
        self.__dict__.pop("_known", None)
        super().remove(*values)  # type: ignore[misc]

    def clear(self) -> None:
        self.__dict__.pop("_known", None)
        super().clear()  # type: ignore[misc]


class Counter(_KnownChildren, _Counter):
    pass


class Gauge(_KnownChildren, _Gauge):
    pass


class Histogram(_KnownChildren, _Histogram):
    pass


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes & co., for the alerts
        self.requests = Counter(
            "tollgate_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tollgate_request_seconds",
            "Time from request to the last byte of the response",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.in_flight = Gauge("tollgate_in_flight", "Requests being served", registry=r)
        self.generations = Counter(
            "tollgate_generations",
            "Generations by model, version, alias and outcome",
            ["model", "version", "alias", "outcome"],
            registry=r,
        )
        self.first_token = Histogram(
            "tollgate_time_to_first_token_seconds",
            "Time from request to the first generated text",
            ["model", "version"],
            buckets=_LATENCY,
            registry=r,
        )
        self.tokens = Counter(
            "tollgate_tokens", "Prompt and completion tokens", ["model", "kind"], registry=r
        )
        self.rate_limited = Counter(
            "tollgate_rate_limited", "Requests refused by a rate limit", registry=r
        )
        self.redis_errors = Counter(
            "tollgate_redis_errors", "Redis calls that failed (rate limits, cache)", registry=r
        )
        self.upstream_errors = Counter(
            "tollgate_upstream_errors", "Failed calls to Triton by kind", ["kind"], registry=r
        )
        self.cache = Counter(
            "tollgate_cache", "Response cache lookups by result", ["result"], registry=r
        )
        self.filtered = Counter(
            "tollgate_filtered", "Prompts refused by the input filter", ["reason"], registry=r
        )
        self.model_loads = Counter(
            "tollgate_model_loads",
            "Model loads asked of Triton workers, by model and outcome",
            ["model", "outcome"],
            registry=r,
        )
        self.alias_changes = Counter(
            "tollgate_alias_changes",
            "Alias changes made through this gateway, by model and action",
            ["model", "action"],
            registry=r,
        )
        self.inter_token = Histogram(
            "tollgate_inter_token_seconds",
            "Mean time between generated tokens of one generation",
            ["model", "version"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.canary_verdicts = Counter(
            "tollgate_canary_verdicts",
            "Canary gate verdicts by model and status (pass, fail, inconclusive)",
            ["model", "status"],
            registry=r,
        )
        self.canary_rollbacks = Counter(
            "tollgate_canary_rollbacks",
            "Canaries the gate set to weight 0 automatically, by model",
            ["model"],
            registry=r,
        )
        self.overhead = Histogram(
            "tollgate_gateway_overhead_seconds",
            "Time the gateway spent on a generation before calling Triton (auth, routing, "
            "rate limit)",
            ["route"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=r,
        )
        self.prompt_chars = Histogram(
            "tollgate_prompt_chars",
            "Prompt length in characters, per model version (for the drift watch)",
            ["model", "version"],
            buckets=(16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
            registry=r,
        )
        self.prompt_drift = Gauge(
            "tollgate_prompt_drift_ks",
            "Kolmogorov-Smirnov statistic between prompt lengths and the version's training "
            "document lengths (0: same shape, 1: disjoint)",
            ["model", "version"],
            registry=r,
        )
        self.prompt_drift_p = Gauge(
            "tollgate_prompt_drift_p_value",
            "Asymptotic p-value of that statistic",
            ["model", "version"],
            registry=r,
        )
        self.prompt_drift_samples = Gauge(
            "tollgate_prompt_drift_samples",
            "Prompts behind the drift statistic",
            ["model", "version"],
            registry=r,
        )
