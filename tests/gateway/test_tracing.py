"""Tracing on (spans recorded, nested) and off (spans cost nothing and change nothing)."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.config import GatewaySettings
from gateway.telemetry.tracing import OffTracer, Tracing


def test_with_tracing_off_spans_are_not_recorded_and_not_made_current() -> None:
    tracing = Tracing(GatewaySettings(otlp_endpoint=""))
    assert not tracing.enabled
    assert isinstance(tracing.tracer, OffTracer)
    for _ in range(2):  # the same no-op span serves every request
        with tracing.tracer.start_as_current_span("route") as outer:
            with tracing.tracer.start_as_current_span("rate_limit") as inner:
                inner.set_attribute("tollgate.model", "m")
                assert trace.get_current_span() is trace.INVALID_SPAN
            assert not outer.is_recording()
    assert not tracing.tracer.start_span("triton").is_recording()


def test_with_tracing_on_spans_nest_and_are_exported() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(GatewaySettings(), exporter=exporter)
    with tracing.tracer.start_as_current_span("route") as outer:
        with tracing.tracer.start_as_current_span("rate_limit"):
            assert trace.get_current_span() is not outer
        assert trace.get_current_span() is outer
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"route", "rate_limit"}
    assert spans["rate_limit"].parent.span_id == spans["route"].context.span_id  # type: ignore[union-attr]
    tracing.shutdown()
