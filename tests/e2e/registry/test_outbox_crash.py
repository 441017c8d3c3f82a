"""The registry process dies between saving a worker and publishing its event; the next process publishes the
event, exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest
from nats.js import JetStreamContext

from cml.monitor.internal.v1 import outbox_pb2
from cml.monitor.v1 import events_pb2, registry_service_pb2_grpc, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_dev.servers import free_port, wait_for_port
from registry.domain.model import created_worker_id
from tests.e2e.conftest import ServiceProcess
from tests.e2e.registry import crashing_registry
from tests.e2e.registry.conftest import AMI

pytestmark = pytest.mark.e2e


async def count_events(js: JetStreamContext, worker_id: str) -> int:
    info = await js.stream_info("CML_WORKERS", subjects_filter=f"cml.workers.{worker_id}.>")
    return sum((info.state.subjects or {}).values())


async def test_event_saved_before_a_crash_is_published_once_after_restart(
        launch: Callable[..., ServiceProcess], js: JetStreamContext, uid: str) -> None:
    start = launch
    port = free_port()
    doomed = start(port, crashing_registry.__name__)
    await asyncio.to_thread(wait_for_port, port, 60)
    request = rs.CreateWorkerRequest(request_id=f"crash-{uid}", name=f"crash-{uid}", region="us-east-1",
                                     instance_type="t3.micro", ami_id=AMI)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = registry_service_pb2_grpc.WorkerRegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as died:
            await stub.CreateWorker(request, timeout=30)
        assert died.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await asyncio.to_thread(doomed.process.wait, 30) == crashing_registry.EXIT_CODE

    worker_id = created_worker_id(request.request_id)
    saved = await (await js.key_value("cml_workers")).get(worker_id)
    outbox = outbox_pb2.WorkerOutbox.FromString(saved.value or b"")
    assert outbox.HasField("pending_event")  # the state is saved, the event is not yet published
    assert worker_pb2.Worker.FromString(saved.value or b"").id == worker_id
    assert await count_events(js, worker_id) == 0

    port = free_port()
    healed = start(port)
    await asyncio.to_thread(wait_for_port, port, 60)
    deadline = asyncio.get_running_loop().time() + 30
    while await count_events(js, worker_id) == 0:
        assert asyncio.get_running_loop().time() < deadline, "the saved event was never published"
        await asyncio.sleep(0.1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = registry_service_pb2_grpc.WorkerRegistryServiceStub(channel)
        again = (await stub.CreateWorker(request, timeout=30)).worker  # the client's retry
        assert again.id == worker_id
    msg = await js.get_last_msg("CML_WORKERS", f"cml.workers.{worker_id}.created")
    event = events_pb2.WorkerEvent.FromString(msg.data or b"")
    assert event.event_id == outbox.pending_event.event_id and (msg.headers or {})["Nats-Msg-Id"] == event.event_id
    assert healed.stop() == 0
    assert await count_events(js, worker_id) == 1
    cleared = await (await js.key_value("cml_workers")).get(worker_id)
    assert not outbox_pb2.WorkerOutbox.FromString(cleared.value or b"").HasField("pending_event")
