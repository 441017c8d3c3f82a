"""OpenTelemetry tracing, configured by the standard OTEL_* environment and off unless asked for.

Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or
OTEL_TRACES_EXPORTER=otlp is set (and OTEL_SDK_DISABLED is not true): the SDK's tracer provider is installed
with a batching OTLP/gRPC exporter, and the gRPC servers and clients get OpenTelemetry's aio interceptors. The
SDK itself reads the rest (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG),
OTEL_EXPORTER_OTLP_HEADERS/_INSECURE/_CERTIFICATE, OTEL_BSP_*). Otherwise nothing is installed: the API's
no-op tracer only carries an incoming context through to outgoing headers, and each method of the gRPC servers
gets a small wrapper that does that for a call whose metadata carries a `traceparent` (a caller's trace still
reaches the events and samples the call causes); calls without one run as they are."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from cmlmon_core.grpc_handlers import rewrap
from cmlmon_core.messages import TRACEPARENT

log = logging.getLogger(__name__)

_EXPORTERS = ("otlp", "none")
_PROTOCOLS = ("grpc",)


class TracingConfigError(Exception):
    """The OTEL_* settings cannot be used; the message names the variable."""


def tracing_wanted(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces; a value this service cannot honour raises."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter and exporter not in _EXPORTERS:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER={exporter!r}: only 'otlp' or 'none' are supported")
    for var in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        protocol = env.get(var, "").strip().lower()
        if protocol and protocol not in _PROTOCOLS:
            raise TracingConfigError(f"{var}={protocol!r}: only 'grpc' (OTLP over gRPC) is supported")
    if exporter == "none":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return exporter == "otlp" or bool(endpoint)


def enabled() -> bool:
    """True once configure() installed the SDK (in this process)."""
    return _installed


_installed = False


def configure(service: str, env: Mapping[str, str] | None = None) -> Any | None:
    """Install the SDK tracer provider with an OTLP exporter when the environment asks for it; returns the
    provider (to shut down at exit, which flushes the last spans) or None when tracing stays off."""
    global _installed
    if not tracing_wanted(os.environ if env is None else env):
        return None
    # Imported here: a service that does not trace never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME, when set, wins over the service's own name (Resource.create reads it).
    attributes = {} if (os.environ if env is None else env).get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
    provider = TracerProvider(resource=Resource.create(attributes))  # sampler from OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _installed = True
    log.info("tracing on", extra={"exporter": "otlp"})
    return provider


@contextlib.contextmanager
def tracing_or_exit(service: str) -> Iterator[None]:
    """configure() for a service's main: a bad OTEL_* value ends the start (exit 2, naming the variable);
    on the way out the provider is shut down, exporting what is left."""
    try:
        provider = configure(service)
    except TracingConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        yield
    finally:
        if provider is not None:
            provider.shutdown()


def server_interceptors() -> Sequence[Any]:
    """OpenTelemetry's aio server interceptor (a SERVER span per call, parent from the caller's metadata) when
    tracing is on; none when it is off (carrying() then passes a caller's context on).

    Health checks are left out: probes every few seconds would fill the traces with spans of their own, and the
    interceptor iterates every streaming handler as a generator, which health's Watch (a coroutine writing with
    context.write) is not: traced, Watch failed with a TypeError."""
    if not _installed:
        return ()
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    return (aio_server_interceptor(filter_=filters.negate(filters.health_check())),)  # type: ignore[no-untyped-call]


def client_interceptors() -> Sequence[Any]:
    """OpenTelemetry's aio client interceptors (a CLIENT span per call, its context sent as metadata)."""
    if not _installed:
        return ()
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return tuple(aio_client_interceptors())  # type: ignore[no-untyped-call]


def carrying(full_method: str, handler: Any) -> Any:
    """The method's handler running a call whose metadata carries `traceparent` in that context, so what it
    publishes carries the caller's trace on (with tracing off the no-op tracer records nothing). For tracing off
    only: with it on, OpenTelemetry's server interceptor does that and more (see server_interceptors)."""
    return rewrap(handler, _attach_carried, _detach)


async def _attach_carried(context: Any) -> object | None:
    """The caller's context attached when its metadata carries `traceparent` (the token to detach), else None."""
    incoming = _carried(context)
    return None if incoming is None else otel_context.attach(incoming)


def _detach(context: Any, token: Any, error: BaseException | None) -> None:
    if token is not None:
        otel_context.detach(token)


def _carried(context: Any) -> Any | None:
    """The caller's trace context when its metadata carries `traceparent`, else None."""
    metadata = context.invocation_metadata() or ()
    if not any(key == TRACEPARENT for key, _ in metadata):
        return None
    return propagate.extract({key: value for key, value in metadata if isinstance(value, str)})
