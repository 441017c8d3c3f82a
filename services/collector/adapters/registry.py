"""The registry's live workers over gRPC (ListWorkers, every page), for reconciliation."""

from __future__ import annotations

from typing import Protocol

import grpc

from cml.monitor.v1 import registry_service_pb2, registry_service_pb2_grpc, worker_pb2
from cmlmon_core.grpc_client import GrpcTarget
from collector.errors import RegistryUnavailable

PAGE_SIZE = 1000


class WorkerDirectory(Protocol):
    async def live_workers(self) -> list[worker_pb2.Worker]:
        """Every worker that is not terminated."""
        ...


class GrpcRegistry:
    def __init__(self, target: GrpcTarget | str, timeout: float = 10.0) -> None:
        self._target = GrpcTarget(target) if isinstance(target, str) else target
        self._address = self._target.address
        self._timeout = timeout

    async def live_workers(self) -> list[worker_pb2.Worker]:
        workers: list[worker_pb2.Worker] = []
        token = ""
        try:
            async with self._target.channel() as channel:
                stub = registry_service_pb2_grpc.WorkerRegistryServiceStub(channel)
                while True:
                    reply = await stub.ListWorkers(
                        registry_service_pb2.ListWorkersRequest(page_size=PAGE_SIZE, page_token=token),
                        timeout=self._timeout, metadata=self._target.metadata)
                    workers.extend(reply.workers)
                    token = reply.next_page_token
                    if not token:
                        return [w for w in workers if w.status != worker_pb2.WORKER_STATUS_TERMINATED]
        except grpc.aio.AioRpcError as exc:
            raise RegistryUnavailable(
                f"ListWorkers at {self._address} failed: {exc.code().name}: {exc.details()}") from exc
