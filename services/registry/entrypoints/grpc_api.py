"""gRPC servicer of cml.monitor.v1.WorkerRegistryService: decode, call the use-case, map registry errors to
status codes. This is the only place that knows gRPC status codes."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import worker_pb2
from cmlmon_core.auth import Role, current_principal
from cmlmon_core.grpc_server import ServedService
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
from registry.service.history import get_worker_metrics
from registry.service.listing import list_workers
from registry.service.view import WatchClosed, WatchOverflow

log = logging.getLogger(__name__)

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

SERVICE_NAME = rs.DESCRIPTOR.services_by_name["WorkerRegistryService"].full_name
# The role each method needs (viewer < operator < admin): launching and terminating instances cost money.
ROLES: dict[str, Role] = {
    "GetWorker": Role.VIEWER, "ListWorkers": Role.VIEWER, "WatchWorkers": Role.VIEWER, "GetWorkerMetrics": Role.VIEWER,
    "StartWorker": Role.OPERATOR, "StopWorker": Role.OPERATOR, "RebootWorker": Role.OPERATOR,
    "ImportWorker": Role.OPERATOR, "SetWorkerController": Role.OPERATOR,
    "CreateWorker": Role.ADMIN, "TerminateWorker": Role.ADMIN,
}


HOT_METHODS = ("GetWorker", "ListWorkers")  # registered with the server (add_to_server)


def status_of(exc: RegistryError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.UNAVAILABLE


def rpc(method: Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[R]]
        ) -> Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[R]]:
    """Translate the registry's errors of one unary RPC into status codes. Counting and timing are the shared
    server's per-method wrappers' job (cmlmon_core.grpc_server), the server span OpenTelemetry's interceptor's."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> R:
        try:
            return await method(self, request, context)
        except RegistryError as exc:
            code = status_of(exc)
            if code == grpc.StatusCode.UNAVAILABLE:
                log.warning("rpc failed", extra={"method": name, "error": str(exc)})
            await context.abort(code, str(exc))
            raise  # unreachable: abort raises
        except Exception:
            log.exception("rpc failed unexpectedly", extra={"method": name})
            raise

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
    # The per-call fast path the generated code takes, for the methods called all the time only: every registered
    # method costs every call the server accepts (cmlmon_core.grpc_server.Wrapping); the others are found by
    # name. grpc-stubs does not know the method yet.
    hot = {name: handlers[name] for name in HOT_METHODS}
    server.add_registered_method_handlers(service.full_name, hot)  # type: ignore[attr-defined]


def served(registry: Registry) -> ServedService:
    """The registry's API as the shared gRPC server builder serves it."""
    return ServedService(SERVICE_NAME, lambda server: add_to_server(WorkerRegistryServicer(registry), server), ROLES)


def _audit(method: str, worker: worker_pb2.Worker, principal: str) -> worker_pb2.Worker:
    """Every accepted mutating call is logged with who made it; its lifecycle event carries the same name."""
    log.info("worker changed by a call", extra={"principal": principal, "method": method, "worker_id": worker.id})
    return worker


class WorkerRegistryServicer:
    """Every RPC of cml.monitor.v1.WorkerRegistryService; registered by add_to_server."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    @rpc
    async def CreateWorker(self, request: rs.CreateWorkerRequest, context: Any) -> rs.CreateWorkerResponse:
        who = current_principal()
        return rs.CreateWorkerResponse(worker=_audit("CreateWorker", await self._registry.create_worker(
            request, who), who))

    @rpc
    async def ImportWorker(self, request: rs.ImportWorkerRequest, context: Any) -> rs.ImportWorkerResponse:
        who = current_principal()
        return rs.ImportWorkerResponse(worker=_audit("ImportWorker", await self._registry.import_worker(
            request, who), who))

    @rpc
    async def GetWorker(self, request: rs.GetWorkerRequest, context: Any) -> bytes:
        """A serialized GetWorkerResponse, from the view's cached encoding."""
        worker = await self._registry.get_worker(request.id)
        return self._registry.view.encoded(worker)

    @rpc
    async def ListWorkers(self, request: rs.ListWorkersRequest, context: Any) -> bytes:
        return list_workers(self._registry, request)  # no I/O: from the view, without another coroutine

    @rpc
    async def GetWorkerMetrics(self, request: rs.GetWorkerMetricsRequest, context: Any
                               ) -> rs.GetWorkerMetricsResponse:
        return await get_worker_metrics(self._registry, request)

    @rpc
    async def StartWorker(self, request: rs.StartWorkerRequest, context: Any) -> rs.StartWorkerResponse:
        who = current_principal()
        return rs.StartWorkerResponse(worker=_audit("StartWorker", await self._registry.start_worker(
            request.id, request.etag, who), who))

    @rpc
    async def StopWorker(self, request: rs.StopWorkerRequest, context: Any) -> rs.StopWorkerResponse:
        who = current_principal()
        return rs.StopWorkerResponse(worker=_audit("StopWorker", await self._registry.stop_worker(
            request.id, request.etag, who), who))

    @rpc
    async def RebootWorker(self, request: rs.RebootWorkerRequest, context: Any) -> rs.RebootWorkerResponse:
        who = current_principal()
        return rs.RebootWorkerResponse(worker=_audit("RebootWorker", await self._registry.reboot_worker(
            request.id, request.etag, who), who))

    @rpc
    async def SetWorkerController(self, request: rs.SetWorkerControllerRequest, context: Any
                                  ) -> rs.SetWorkerControllerResponse:
        return rs.SetWorkerControllerResponse(worker=await self._registry.set_controller(request))

    @rpc
    async def TerminateWorker(self, request: rs.TerminateWorkerRequest, context: Any
                              ) -> rs.TerminateWorkerResponse:
        who = current_principal()
        return rs.TerminateWorkerResponse(worker=_audit("TerminateWorker", await self._registry.terminate_worker(
            request.id, request.etag, who, request.force), who))

    async def WatchWorkers(self, request: rs.WatchWorkersRequest, context: grpc.aio.ServicerContext[Any, Any]
                           ) -> AsyncIterator[rs.WatchWorkersResponse]:
        try:
            validation.watch(request)
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        view = self._registry.view
        await view.ready.wait()
        try:
            sub = view.subscribe()
        except WatchClosed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "registry is shutting down")

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
