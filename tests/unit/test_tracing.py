"""When the OTEL_* environment turns tracing on, what it refuses, and log lines that name their span."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider

from cmlmon_core import tracing
from cmlmon_core.logs import JsonFormatter, TextFormatter
from cmlmon_core.telemetry import extract_trace, publishing, untraced_headers
from cmlmon_core.tracing import TracingConfigError, tracing_wanted


@pytest.mark.parametrize(("env", "wanted"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),  # no exporter asked for
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://otel:4317"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),  # the exporter's default endpoint, localhost:4317
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317"}, False),
])
def test_tracing_is_on_only_when_an_exporter_is_asked_for(env: dict[str, str], wanted: bool) -> None:
    assert tracing_wanted(env) is wanted


@pytest.mark.parametrize(("env", "named"), [
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
     "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
])
def test_what_cannot_be_honoured_is_refused_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(TracingConfigError, match=named):
        tracing_wanted(env)


def test_off_installs_nothing_and_only_carries_an_incoming_context() -> None:
    assert tracing.configure("registry", env={}) is None
    assert not tracing.enabled()
    assert tracing.client_interceptors() == ()
    assert tracing.server_interceptors() == ()
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


def test_off_a_batch_injects_the_incoming_context_once_for_all_its_messages() -> None:
    assert tracing.configure("collector", env={}) is None
    incoming = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    token = context.attach(extract_trace(incoming))
    try:
        with publishing("collector.publish_sample", "cml.metrics.r.w") as per_message:
            assert per_message == incoming
        assert untraced_headers() == incoming
    finally:
        context.detach(token)
    assert untraced_headers() == {}


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("cmlmon.test", logging.INFO, __file__, 1, message, None, None)


def test_log_lines_name_the_active_span_and_only_then() -> None:
    tracer = TracerProvider().get_tracer("test")  # not installed globally: the current span is what counts
    outside = json.loads(JsonFormatter("registry").format(record("outside")))
    assert "trace_id" not in outside and "span_id" not in outside
    with tracer.start_as_current_span("work") as span:
        ids = span.get_span_context()
        inside = json.loads(JsonFormatter("registry").format(record("inside")))
        text = TextFormatter("registry").format(record("inside"))
    assert inside["trace_id"] == f"{ids.trace_id:032x}" and inside["span_id"] == f"{ids.span_id:016x}"
    assert f"trace_id={ids.trace_id:032x}" in text
