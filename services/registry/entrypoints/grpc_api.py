"""gRPC servicer of cml.monitor.v1.WorkerRegistryService: decode, call the use-case, map registry errors to
status codes. This is the only place that knows gRPC status codes."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Histogram

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import worker_pb2
from cmlmon_core.telemetry import extract_trace, tracer
from registry.domain import model, validation
from registry.errors import (
    Aborted,
    AlreadyExists,
    Ec2Error,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RegistryError,
    Unavailable,
)
from registry.service.handlers import Registry
from registry.service.listing import list_workers
from registry.service.view import WatchClosed, WatchOverflow

log = logging.getLogger(__name__)
_tracer = tracer("registry")

RPCS = Counter("registry_rpc_total", "gRPC calls handled", ["method", "code"])
RPC_SECONDS = Histogram("registry_rpc_seconds", "gRPC call latency", ["method"],
                        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10))

_CODES: list[tuple[type[RegistryError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Aborted, grpc.StatusCode.ABORTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Ec2Error, grpc.StatusCode.FAILED_PRECONDITION),
]

R = TypeVar("R")


def status_of(exc: RegistryError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.UNAVAILABLE


def rpc(method: Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[R]]
        ) -> Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[R]]:
    """Count, time, and translate the registry's errors of one unary RPC."""
    name = method.__name__
    ok = RPCS.labels(name, "OK")  # bound once: label lookups cost more than the GetWorker itself
    seconds = RPC_SECONDS.labels(name)

    span_name = f"registry.{name}"

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> R:
        started = time.perf_counter()
        parent = extract_trace({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
        try:
            with _tracer.start_as_current_span(span_name, context=parent, kind=SpanKind.SERVER):
                result = await method(self, request, context)
        except RegistryError as exc:
            code = status_of(exc)
            RPCS.labels(name, code.name).inc()
            if code == grpc.StatusCode.UNAVAILABLE:
                log.warning("rpc failed", extra={"method": name, "error": str(exc)})
            await context.abort(code, str(exc))
            raise  # unreachable: abort raises
        except Exception:
            RPCS.labels(name, "INTERNAL").inc()
            log.exception("rpc failed unexpectedly", extra={"method": name})
            raise
        finally:
            seconds.observe(time.perf_counter() - started)
        ok.inc()
        return result

    return wrapper


def _serialize(response: Message | bytes) -> bytes:
    """Responses are messages, or bytes the servicer already serialized (GetWorker, ListWorkers)."""
    return response if isinstance(response, bytes) else response.SerializeToString()


def add_to_server(servicer: WorkerRegistryServicer, server: grpc.aio.Server) -> None:
    """What the generated add_..._to_server does, with a serializer that passes pre-serialized bytes through."""
    service = rs.DESCRIPTOR.services_by_name["WorkerRegistryService"]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_type = getattr(rs, method.input_type.name)
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(getattr(servicer, method.name), request_deserializer=request_type.FromString,
                                     response_serializer=_serialize)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    # the per-call fast path the generated code also takes (grpc-stubs does not know the method yet)
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]


class WorkerRegistryServicer:
    """Every RPC of cml.monitor.v1.WorkerRegistryService; registered by add_to_server."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    @rpc
    async def CreateWorker(self, request: rs.CreateWorkerRequest, context: Any) -> rs.CreateWorkerResponse:
        return rs.CreateWorkerResponse(worker=await self._registry.create_worker(request))

    @rpc
    async def ImportWorker(self, request: rs.ImportWorkerRequest, context: Any) -> rs.ImportWorkerResponse:
        return rs.ImportWorkerResponse(worker=await self._registry.import_worker(request))

    @rpc
    async def GetWorker(self, request: rs.GetWorkerRequest, context: Any) -> bytes:
        """A serialized GetWorkerResponse, from the view's cached encoding."""
        worker = await self._registry.get_worker(request.id)
        return self._registry.view.encoded(worker)

    @rpc
    async def ListWorkers(self, request: rs.ListWorkersRequest, context: Any) -> bytes:
        return await list_workers(self._registry, request)

    @rpc
    async def StartWorker(self, request: rs.StartWorkerRequest, context: Any) -> rs.StartWorkerResponse:
        return rs.StartWorkerResponse(worker=await self._registry.start_worker(request.id, request.etag))

    @rpc
    async def StopWorker(self, request: rs.StopWorkerRequest, context: Any) -> rs.StopWorkerResponse:
        return rs.StopWorkerResponse(worker=await self._registry.stop_worker(request.id, request.etag))

    @rpc
    async def TerminateWorker(self, request: rs.TerminateWorkerRequest, context: Any
                              ) -> rs.TerminateWorkerResponse:
        return rs.TerminateWorkerResponse(worker=await self._registry.terminate_worker(request.id, request.etag,
                                                                                   request.force))

    async def WatchWorkers(self, request: rs.WatchWorkersRequest, context: grpc.aio.ServicerContext[Any, Any]
                           ) -> AsyncIterator[rs.WatchWorkersResponse]:
        try:
            validation.watch(request)
        except InvalidArgument as exc:
            RPCS.labels("WatchWorkers", "INVALID_ARGUMENT").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        view = self._registry.view
        await view.ready.wait()
        try:
            sub = view.subscribe()
        except WatchClosed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "registry is shutting down")
        RPCS.labels("WatchWorkers", "OK").inc()

        def wanted(worker: worker_pb2.Worker) -> bool:
            return not request.region or worker.region == request.region

        try:
            for stored in view.snapshot():
                worker = stored.worker
                if wanted(worker) and (request.show_terminated or worker.status != model.TERMINATED):
                    yield rs.WatchWorkersResponse(worker=worker, initial=True)
            while True:
                change = await sub.next()
                if wanted(change.worker):
                    yield rs.WatchWorkersResponse(worker=change.worker, event_type=change.event_type)
        except WatchClosed:
            return
        except WatchOverflow:
            await context.abort(grpc.StatusCode.ABORTED, "the stream fell behind the changes; watch again")
        finally:
            sub.close()
