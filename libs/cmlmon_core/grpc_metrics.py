"""Per-method gRPC server metrics, named as the Prometheus gRPC ecosystem names them (go-grpc-prometheus,
py-grpc-prometheus), so that its dashboards and alerts work unchanged:

- `grpc_server_started_total{grpc_type,grpc_service,grpc_method}`: calls started;
- `grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}`: calls finished, by status code;
- `grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}`: a histogram of their duration (for a
  server stream: until the stream ends).

Counted by a wrapper the shared server builder puts around each method's handler once, outside the admission
check, so refused calls (UNAUTHENTICATED, PERMISSION_DENIED) are counted too. The label children of a method
are looked up once and kept, so a call costs two increments and one observation."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from cmlmon_core.grpc_handlers import rewrap

_LABELS = ["grpc_type", "grpc_service", "grpc_method"]
STARTED = Counter("grpc_server_started", "RPCs started on the server", _LABELS)
HANDLED = Counter("grpc_server_handled", "RPCs completed on the server, regardless of success or failure",
                  [*_LABELS, "grpc_code"])
HANDLING_SECONDS = Histogram("grpc_server_handling_seconds",
                             "Response latency (seconds) of gRPC that had been application-level handled by the "
                             "server", _LABELS,
                             buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

Context = grpc.aio.ServicerContext[Any, Any]


def _rpc_type(handler: grpc.RpcMethodHandler[Any, Any]) -> str:
    if handler.unary_unary:
        return "unary"
    if handler.unary_stream:
        return "server_stream"
    if handler.stream_unary:
        return "client_stream"
    return "bidi_stream"


@dataclass
class _Method:
    """One method's label children, bound once."""

    labels: tuple[str, str, str]
    started: Any
    seconds: Any
    handled: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def bind(cls, full_method: str, rpc_type: str) -> _Method:
        _, service, method = full_method.split("/", 2) if full_method.count("/") == 2 else ("", "", full_method)
        labels = (rpc_type, service, method)
        return cls(labels, STARTED.labels(*labels), HANDLING_SECONDS.labels(*labels))

    async def start(self, context: Context) -> float:
        self.started.inc()
        return time.perf_counter()

    def end(self, context: Context, started: float, error: BaseException | None) -> None:
        self.seconds.observe(time.perf_counter() - started)
        code = _code(context, error)
        child = self.handled.get(code)
        if child is None:
            child = self.handled[code] = HANDLED.labels(*self.labels, code)
        child.inc()


def _code(context: Context, error: BaseException | None) -> str:
    """The status the call ended with: the one set on the context (abort sets it), else what the error means."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if error is None:
        return "OK"
    # a stream the client abandoned is closed at its yield (GeneratorExit), a cancelled call is cancelled
    return "CANCELLED" if isinstance(error, asyncio.CancelledError | GeneratorExit) else "UNKNOWN"


def counted(full_method: str, handler: Any) -> Any:
    """The method's handler, counting and timing every call (unary and streaming) by status code."""
    method = _Method.bind(full_method, _rpc_type(handler))
    return rewrap(handler, method.start, method.end)
