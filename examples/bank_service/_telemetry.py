"""The service's OpenTelemetry: metrics for Prometheus, traces to OTLP, ids in the logs.

`configure_telemetry()` (run once per server process, by `main` and `worker_app`) sets
the process's global OpenTelemetry providers, which esactors picks up when the app's
lifespan opens the actor system:

- a meter provider whose Prometheus reader feeds the process's `prometheus_client`
  registry, served as `GET /metrics` (Prometheus text format; with several workers,
  each answers with its own process's metrics);
- when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard variable, with the rest of the
  `OTEL_EXPORTER_OTLP_*` ones), a tracer provider exporting spans over OTLP/HTTP in
  batches; without it no tracer provider is set, and esactors emits no spans.

`request_span` opens each request's server span (continuing a `traceparent` the client
sent), the parent of the esactors spans of the commands it sends; `add_trace_ids` is
the structlog processor that puts that span's `trace_id` and `span_id` in every log
line written inside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

__all__ = [
    "METRICS_CONTENT_TYPE",
    "OTLP_ENDPOINT_ENV",
    "add_trace_ids",
    "configure_telemetry",
    "flush_telemetry",
    "metrics_text",
    "request_span",
]

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
"""The standard variable naming the OTLP collector; traces are exported when it is set."""
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The content type of `GET /metrics` (Prometheus text format)."""

_configured = False
_tracer = trace.get_tracer("examples.bank_service")


def configure_telemetry(environ: Mapping[str, str] = os.environ) -> None:
    """Set this process's global meter provider (Prometheus) and, when
    `OTEL_EXPORTER_OTLP_ENDPOINT` is set, its tracer provider (OTLP). Once per process:
    OpenTelemetry's global providers cannot be replaced, so later calls do nothing."""
    global _configured
    if _configured:
        return
    _configured = True
    resource = Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME", "bank_service")})
    metrics.set_meter_provider(
        MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()])
    )
    if environ.get(OTLP_ENDPOINT_ENV):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)


def flush_telemetry(timeout: float = 5.0) -> None:
    """Export the spans still buffered (the lifespan's last step: uvicorn ends the
    process by the signal it caught, so no exit hook would run)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(int(timeout * 1000))


def metrics_text() -> bytes:
    """This process's metrics in Prometheus text format."""
    return generate_latest(REGISTRY)


@contextmanager
def request_span(method: str, route: str, headers: Mapping[str, str]) -> Iterator[Span]:
    """The server span of one request (current inside the block): a child of the
    `traceparent` header when the client sent one."""
    with _tracer.start_as_current_span(
        f"{method} {route}",
        context=propagate.extract(headers),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route},
    ) as span:
        yield span


def add_trace_ids(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: the current span's `trace_id` and `span_id` (hex, as
    OpenTelemetry shows them), when a span is recording."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = f"{context.trace_id:032x}"
        event_dict["span_id"] = f"{context.span_id:016x}"
    return event_dict
