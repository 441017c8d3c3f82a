"""Two `python -m registry` processes against one NATS at the same time: writes through either, samples shared
by the durable consumer, and both serve the same state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest
from nats.js import JetStreamContext

from cml.monitor.v1 import events_pb2, registry_service_pb2_grpc, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_core import messages, subjects
from cmlmon_dev.servers import free_port, wait_for_port
from tests.e2e.conftest import ServiceProcess
from tests.e2e.registry.conftest import AMI
from tests.support import eventually

pytestmark = pytest.mark.e2e


async def test_two_processes_serve_one_consistent_fleet(launch: Callable[..., ServiceProcess], js: JetStreamContext,
                                                        uid: str) -> None:
    ports = [free_port(), free_port()]
    for port in ports:
        launch(port)
    for port in ports:
        await asyncio.to_thread(wait_for_port, port, 60)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p}") for p in ports]
    stubs = [registry_service_pb2_grpc.WorkerRegistryServiceStub(c) for c in channels]
    try:
        workers = await asyncio.gather(*(stubs[n % 2].CreateWorker(rs.CreateWorkerRequest(
            request_id=f"two-{uid}-{n}", name=f"two-{n}", region="us-east-1", instance_type="t3.micro",
            ami_id=AMI, tags={"test": uid})) for n in range(6)))
        for round_ in range(5):
            for n, response in enumerate(workers):
                w = response.worker
                sample = events_pb2.MetricSample(worker_id=w.id, region=w.region, instance_id=w.instance_id,
                                                 status=worker_pb2.WORKER_STATUS_RUNNING,
                                                 cpu_utilization=float(10 * round_ + n))
                sample.observe_time.GetCurrentTime()
                data, headers = messages.encode(sample)
                await js.publish(subjects.metric(w.region, w.id), data, headers=headers)
        expected = {r.worker.id: 40.0 + n for n, r in enumerate(workers)}

        async def listing(stub: registry_service_pb2_grpc.WorkerRegistryServiceAsyncStub
                          ) -> list[tuple[str, str, float]]:
            page = await stub.ListWorkers(rs.ListWorkersRequest(tags={"test": uid}))
            return [(w.id, w.etag, w.cpu_utilization) for w in page.workers]

        async def views_agree() -> tuple[list[tuple[str, str, float]], ...] | None:
            one, two = await listing(stubs[0]), await listing(stubs[1])
            return None if one != two or {i: cpu for i, _, cpu in one} != expected else (one, two)

        await eventually(views_agree, timeout=30)
        info = await js.consumer_info("CML_METRICS", "registry")
        assert info.num_ack_pending == 0 and info.num_redelivered == 0
    finally:
        for channel in channels:
            await channel.close(None)
