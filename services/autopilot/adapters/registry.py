"""The registry as the autopilot calls it: GetWorker, StopWorker, StartWorker, RebootWorker and
SetWorkerController over gRPC, with the autopilot's own token as `authorization: Bearer` metadata; gRPC errors
become RegistryCallFailed (or None for NOT_FOUND)."""

from __future__ import annotations

from typing import Protocol

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
            reply = await self._stub.GetWorker(rs.GetWorkerRequest(id=worker_id), metadata=self._metadata,
                                               timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise RegistryCallFailed(f"GetWorker {worker_id}: {exc.code().name}: {exc.details()}") from exc
        return reply.worker

    async def stop_worker(self, worker_id: str) -> worker_pb2.Worker:
        try:
            reply = await self._stub.StopWorker(rs.StopWorkerRequest(id=worker_id), metadata=self._metadata,
                                                timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise RegistryCallFailed(f"StopWorker {worker_id}: {exc.code().name}: {exc.details()}") from exc
        return reply.worker

    async def start_worker(self, worker_id: str) -> worker_pb2.Worker:
        try:
            reply = await self._stub.StartWorker(rs.StartWorkerRequest(id=worker_id), metadata=self._metadata,
                                                 timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise RegistryCallFailed(f"StartWorker {worker_id}: {exc.code().name}: {exc.details()}") from exc
        return reply.worker

    async def reboot_worker(self, worker_id: str) -> worker_pb2.Worker:
        try:
            reply = await self._stub.RebootWorker(rs.RebootWorkerRequest(id=worker_id), metadata=self._metadata,
                                                  timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise RegistryCallFailed(f"RebootWorker {worker_id}: {exc.code().name}: {exc.details()}") from exc
        return reply.worker

    async def set_controller(self, worker_id: str, controller: worker_pb2.CmlController) -> worker_pb2.Worker:
        try:
            reply = await self._stub.SetWorkerController(
                rs.SetWorkerControllerRequest(id=worker_id, controller=controller), metadata=self._metadata,
                timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise RegistryCallFailed(f"SetWorkerController {worker_id}: {exc.code().name}: {exc.details()}") from exc
        return reply.worker
