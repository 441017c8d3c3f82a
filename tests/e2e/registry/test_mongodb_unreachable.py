"""`python -m registry` with WORKER_STORE=mongodb and MongoDB unreachable at start: it retries with back-off and
does not serve yet (gRPC calls fail with UNAVAILABLE, never UNKNOWN), serves once MongoDB answers, and exits
cleanly on SIGTERM while still waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import registry_service_pb2_grpc
from cmlmon_dev.servers import MongoServer, free_port, wait_for_port
from tests.e2e.conftest import ServiceProcess
from tests.support import eventually

pytestmark = pytest.mark.e2e


def start_with_mongodb(launch: Callable[..., ServiceProcess], mongo_port: int, uid: str) -> tuple[ServiceProcess, int]:
    port = free_port()
    process = launch(port, WORKER_STORE="mongodb", MONGODB_URI=f"mongodb://127.0.0.1:{mongo_port}/?directConnection=true",
                     MONGODB_DATABASE=f"t-{uid}", MONGODB_SERVER_SELECTION_SECONDS="0.5")
    return process, port


async def get_worker(port: int, worker_id: str) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = registry_service_pb2_grpc.WorkerRegistryServiceStub(channel)
        try:
            await stub.GetWorker(rs.GetWorkerRequest(id=worker_id), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_unreachable_at_start_answers_unavailable_then_serves_once_mongodb_is_up(
        launch: Callable[..., ServiceProcess], tmp_path: Path, uid: str) -> None:
    mongo_port = free_port()
    registry, port = start_with_mongodb(launch, mongo_port, uid)
    await eventually(lambda: "mongodb unreachable; retrying" in registry.log(), timeout=60)
    assert await get_worker(port, f"w-{uid}") == grpc.StatusCode.UNAVAILABLE
    assert registry.process.poll() is None  # still trying
    with MongoServer(tmp_path / "mongodb", mongo_port, log_file=tmp_path / "secantusd.log"):
        await asyncio.to_thread(wait_for_port, port, 60)
        assert await get_worker(port, f"w-{uid}") == grpc.StatusCode.NOT_FOUND  # served from the store
        assert await asyncio.to_thread(registry.stop) == 0


async def test_sigterm_while_waiting_for_mongodb_exits_cleanly(
        launch: Callable[..., ServiceProcess], uid: str) -> None:
    registry, _ = start_with_mongodb(launch, free_port(), uid)
    await eventually(lambda: "mongodb unreachable; retrying" in registry.log(), timeout=60)
    assert await asyncio.to_thread(registry.stop) == 0
    assert "stop requested during start-up" in registry.log()
