"""The registry as the autopilot calls it: GetWorker, StopWorker, StartWorker, RebootWorker and
SetWorkerController over gRPC, with the autopilot's own token as `authorization: Bearer` metadata; gRPC errors
become RegistryCallFailed (or None for NOT_FOUND)."""

from __future__ import annotations

from typing import Any, Protocol

import grpc

from autopilot.errors import RegistryCallFailed
from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import registry_service_pb2_grpc as rs_grpc
from cml.monitor.v1 import worker_pb2


class RegistryPort(Protocol):
    async def get_worker(self, worker_id: str) -> worker_pb2.Worker | None: ...
    async def stop_worker(self, worker_id: str) -> worker_pb2.Worker: ...
    async def start_worker(self, worker_id: str) -> worker_pb2.Worker: ...
    async def reboot_worker(self, worker_id: str) -> worker_pb2.Worker: ...
    async def set_controller(self, worker_id: str, controller: worker_pb2.CmlController) -> worker_pb2.Worker: ...


class GrpcRegistry:
    def __init__(self, channel: grpc.aio.Channel, token: str = "", timeout: float = 30.0) -> None:
        self._stub = rs_grpc.WorkerRegistryServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout

    async def get_worker(self, worker_id: str) -> worker_pb2.Worker | None:
        try:
            return await self._call("GetWorker", rs.GetWorkerRequest(id=worker_id))
        except RegistryCallFailed as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    async def stop_worker(self, worker_id: str) -> worker_pb2.Worker:
        return await self._call("StopWorker", rs.StopWorkerRequest(id=worker_id))

    async def start_worker(self, worker_id: str) -> worker_pb2.Worker:
        return await self._call("StartWorker", rs.StartWorkerRequest(id=worker_id))

    async def reboot_worker(self, worker_id: str) -> worker_pb2.Worker:
        return await self._call("RebootWorker", rs.RebootWorkerRequest(id=worker_id))

    async def set_controller(self, worker_id: str, controller: worker_pb2.CmlController) -> worker_pb2.Worker:
        return await self._call("SetWorkerController", rs.SetWorkerControllerRequest(id=worker_id,
                                                                                     controller=controller))

    async def _call(self, method: str, request: Any) -> worker_pb2.Worker:
        """One unary call of the registry that answers with a worker; a gRPC error becomes RegistryCallFailed
        naming the method, the worker and the status."""
        try:
            reply = await getattr(self._stub, method)(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise RegistryCallFailed(f"{method} {request.id}: {exc.code().name}: {exc.details()}",
                                     code=exc.code()) from exc
        worker: worker_pb2.Worker = reply.worker
        return worker
