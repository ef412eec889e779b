"""OpenTelemetry traces of the gateway: off unless `TOLLGATE_OTLP_ENDPOINT` is set.

Each request is one span (continuing the caller's trace when it sends a W3C `traceparent`),
named after its route template and carrying the request id, with children for the caller's
authentication, routing, the rate limit and the Triton call. The Triton call's context goes
to the worker as the request's `traceparent` parameter. Spans are exported over OTLP/HTTP in
batches; tests hand `create_app` an in-memory exporter instead. The tracer provider belongs to
the app, not to the process, so two apps in one process never share spans.
"""

from __future__ import annotations

import contextlib
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.config import GatewaySettings

_PROPAGATOR = TraceContextTextMapPropagator()


class OffTracer(trace.NoOpTracer):
    """The tracer while tracing is off: a span costs nothing, not even making it current
    (which the API's no-op tracer does, a context switch per span on every request)."""

    _nothing = contextlib.nullcontext(trace.INVALID_SPAN)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._nothing


class Tracing:
    def __init__(self, settings: GatewaySettings, exporter: SpanExporter | None = None) -> None:
        self.provider: TracerProvider | None = None
        self.tracer: trace.Tracer = OffTracer()
        if exporter is None and not settings.otlp_endpoint:
            return
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": settings.otel_service_name})
        )
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            self.provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
            )
        else:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("tollgate.gateway")

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def incoming(headers: dict[bytes, bytes]) -> Context:
    """The caller's trace context, from its `traceparent` / `tracestate` headers."""
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers.items()
        if name in {b"traceparent", b"tracestate"}
    }
    return _PROPAGATOR.extract(carrier)


def traceparent(span: trace.Span) -> str:
    """The W3C `traceparent` naming `span`, to hand to the next hop ("" when not recording)."""
    if not span.is_recording():
        return ""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", "")
