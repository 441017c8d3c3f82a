"""Tracing and metrics plumbing shared by the services.

Trace context crosses NATS in the `traceparent` header (W3C), through OpenTelemetry's propagator; with no
SDK configured the API is a no-op, so this costs nothing until someone turns tracing on."""

from __future__ import annotations

import logging

from opentelemetry import context, propagate, trace
from prometheus_client import start_http_server

log = logging.getLogger(__name__)


def inject_trace(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context (traceparent/tracestate) to headers and return them."""
    propagate.inject(headers)
    return headers


def extract_trace(headers: dict[str, str] | None) -> context.Context:
    """The trace context carried by a message's headers (an empty context when there is none)."""
    return propagate.extract(headers or {})


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    """Expose the default Prometheus registry on http://host:port/metrics (0 disables)."""
    if port:
        start_http_server(port, addr=host)
        log.info("metrics listening", extra={"port": port})
