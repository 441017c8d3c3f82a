"""The autopilot calls the registry under its own identity: its token travels as `authorization: Bearer` on
every call (a real gRPC server on loopback records what it receives), and a refused call is an error naming the
status, never a crash."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from autopilot.adapters.registry import GrpcRegistry
from autopilot.errors import RegistryCallFailed
from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import registry_service_pb2_grpc as rs_grpc
from cml.monitor.v1 import worker_pb2

pytestmark = pytest.mark.integration


class Recording(rs_grpc.WorkerRegistryServiceServicer):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def _auth(self, method: str, context: Any) -> str:
        token = dict(context.invocation_metadata() or ()).get("authorization", "")
        self.seen.append((method, str(token)))
        return str(token)

    async def GetWorker(self, request: rs.GetWorkerRequest, context: Any) -> rs.GetWorkerResponse:
        self._auth("GetWorker", context)
        return rs.GetWorkerResponse(worker=worker_pb2.Worker(id=request.id))

    async def StopWorker(self, request: rs.StopWorkerRequest, context: Any) -> rs.StopWorkerResponse:
        if self._auth("StopWorker", context) != "Bearer autopilot-token":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "operator role needed")
        return rs.StopWorkerResponse(worker=worker_pb2.Worker(id=request.id))

    async def RebootWorker(self, request: rs.RebootWorkerRequest, context: Any) -> rs.RebootWorkerResponse:
        self._auth("RebootWorker", context)
        return rs.RebootWorkerResponse(worker=worker_pb2.Worker(id=request.id))


async def test_the_token_is_sent_as_bearer_metadata_and_a_refusal_is_named() -> None:
    recording = Recording()  # type: ignore[abstract]  # the RPCs it does not define answer UNIMPLEMENTED
    server = grpc.aio.server()
    rs_grpc.add_WorkerRegistryServiceServicer_to_server(recording, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert (await GrpcRegistry(channel, "autopilot-token").stop_worker("w-1")).id == "w-1"
            assert (await GrpcRegistry(channel, "autopilot-token").get_worker("w-1")) is not None
            assert (await GrpcRegistry(channel, "autopilot-token").reboot_worker("w-1")).id == "w-1"
            with pytest.raises(RegistryCallFailed, match="PERMISSION_DENIED"):
                await GrpcRegistry(channel, "").stop_worker("w-1")
    finally:
        await server.stop(None)
    assert recording.seen == [("StopWorker", "Bearer autopilot-token"), ("GetWorker", "Bearer autopilot-token"),
                              ("RebootWorker", "Bearer autopilot-token"), ("StopWorker", "")]
