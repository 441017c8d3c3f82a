"""The NATS server restarts under a running registry: it reconnects, its view and consumer carry on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import worker_pb2
from cmlmon_dev.servers import NatsServer
from tests.integration.registry.conftest import AMI, REGION, eventually, registry_settings, running_registry
from tests.integration.registry.test_skeleton import publish_sample

pytestmark = pytest.mark.integration


async def test_registry_survives_a_nats_restart(tmp_path: Path, aws_endpoint: str, uid: str) -> None:
    server = NatsServer(tmp_path / "js", log_file=tmp_path / "nats.log").start()
    port = server.port
    try:
        async with running_registry(registry_settings(server.url, aws_endpoint)) as registry:
            worker = (await registry.stub.CreateWorker(rs.CreateWorkerRequest(
                request_id=f"restart-{uid}", name=f"restart-{uid}", region=REGION, instance_type="t3.micro",
                ami_id=AMI))).worker

            await asyncio.to_thread(server.stop)
            server = NatsServer(tmp_path / "js", port=port, log_file=tmp_path / "nats.log").start()

            nc = await nats.connect(server.url)
            try:
                js = nc.jetstream()
                await publish_sample(js, worker, status=worker_pb2.WORKER_STATUS_STOPPED, cpu_utilization=5.0)

                async def applied() -> bool:
                    got = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
                    return got.status == worker_pb2.WORKER_STATUS_STOPPED

                await eventually(applied, timeout=60)
                stopped = await registry.stub.TerminateWorker(rs.TerminateWorkerRequest(id=worker.id))
                assert stopped.worker.status == worker_pb2.WORKER_STATUS_SHUTTING_DOWN
                listed = await registry.stub.ListWorkers(rs.ListWorkersRequest(name_prefix=f"restart-{uid}"))
                assert [w.status for w in listed.workers] == [worker_pb2.WORKER_STATUS_SHUTTING_DOWN]
            finally:
                await nc.drain()
    finally:
        await asyncio.to_thread(server.stop)
