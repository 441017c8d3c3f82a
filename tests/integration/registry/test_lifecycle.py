"""Start/Stop/Terminate transitions, etags, ListWorkers paging and filters, WatchWorkers."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from nats.js import JetStreamContext

from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from tests.integration.registry.conftest import (
    AMI,
    REGION,
    EventTap,
    RunningRegistry,
    eventually,
    registry_settings,
    running_registry,
    samples_consumed,
)
from tests.integration.registry.test_skeleton import launch_plain_instance, publish_sample

pytestmark = pytest.mark.integration

E = events_pb2
W = worker_pb2


async def create(registry: RunningRegistry, uid: str, n: int = 0, **tags: str) -> W.Worker:
    request = rs.CreateWorkerRequest(request_id=f"{uid}-{n}", name=f"n{n}-{uid}", region=REGION,
                                     instance_type="t3.micro", ami_id=AMI, tags={"test": uid, **tags})
    return (await registry.stub.CreateWorker(request)).worker


async def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value.code()


async def status_is(registry: RunningRegistry, worker_id: str, status: int) -> bool:
    got = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker_id))).worker
    return got.status == status


async def test_stop_start_terminate_move_through_intermediate_statuses(
        registry: RunningRegistry, tap: EventTap, js: JetStreamContext, uid: str) -> None:
    stub = registry.stub
    worker = await create(registry, uid)
    await publish_sample(js, worker, status=W.WORKER_STATUS_RUNNING)
    await eventually(lambda: status_is(registry, worker.id, W.WORKER_STATUS_RUNNING))

    stopping = (await stub.StopWorker(rs.StopWorkerRequest(id=worker.id))).worker
    assert stopping.status == W.WORKER_STATUS_STOPPING and stopping.requested_status == W.WORKER_STATUS_STOPPED
    assert worker.requested_status == W.WORKER_STATUS_RUNNING and worker.HasField("requested_time")  # the create
    assert stopping.requested_time.ToNanoseconds() > worker.requested_time.ToNanoseconds()
    stopped_event = (await eventually(lambda: tap.of(worker.id, E.WORKER_EVENT_TYPE_STOPPED)))[0]
    assert stopped_event.requested and stopped_event.previous_status == W.WORKER_STATUS_RUNNING
    assert await code_of(stub.StartWorker(rs.StartWorkerRequest(id=worker.id))) == grpc.StatusCode.FAILED_PRECONDITION

    await publish_sample(js, worker, status=W.WORKER_STATUS_STOPPED)
    await eventually(lambda: status_is(registry, worker.id, W.WORKER_STATUS_STOPPED))
    # the status served is saved before its event is published: wait for that event, not the earlier RUNNING one
    observed = (await eventually(lambda: [e for e in tap.of(worker.id, E.WORKER_EVENT_TYPE_STATUS_CHANGED)
                                          if e.worker.status == W.WORKER_STATUS_STOPPED]))[-1]
    assert observed.worker.status == W.WORKER_STATUS_STOPPED and observed.requested  # the stop we asked for

    again = (await stub.StopWorker(rs.StopWorkerRequest(id=worker.id))).worker  # already stopped: no change
    assert again.status == W.WORKER_STATUS_STOPPED
    started = (await stub.StartWorker(rs.StartWorkerRequest(id=worker.id))).worker
    assert started.status == W.WORKER_STATUS_PENDING
    await eventually(lambda: tap.of(worker.id, E.WORKER_EVENT_TYPE_STARTED))

    ending = (await stub.TerminateWorker(rs.TerminateWorkerRequest(id=worker.id))).worker
    assert ending.status == W.WORKER_STATUS_SHUTTING_DOWN
    assert await code_of(stub.StopWorker(rs.StopWorkerRequest(id=worker.id))) == grpc.StatusCode.FAILED_PRECONDITION
    await publish_sample(js, worker, status=W.WORKER_STATUS_TERMINATED)
    terminated = (await eventually(lambda: tap.of(worker.id, E.WORKER_EVENT_TYPE_TERMINATED)))[0]
    assert terminated.requested and terminated.worker.status == W.WORKER_STATUS_TERMINATED
    same = (await stub.TerminateWorker(rs.TerminateWorkerRequest(id=worker.id))).worker
    assert same.status == W.WORKER_STATUS_TERMINATED
    assert await code_of(stub.StopWorker(rs.StopWorkerRequest(id=worker.id))) == grpc.StatusCode.FAILED_PRECONDITION
    assert await code_of(stub.StartWorker(rs.StartWorkerRequest(id=worker.id))) == grpc.StatusCode.FAILED_PRECONDITION
    # every sample applied (its event published before its ack): the stream, not a subscriber's timing, says
    # whether "terminated" went out twice
    await samples_consumed(js)
    info = await js.stream_info("CML_WORKERS", subjects_filter=f"cml.workers.{worker.id}.terminated")
    assert info.state.subjects == {f"cml.workers.{worker.id}.terminated": 1}


async def test_etag_makes_a_conditional_change(registry: RunningRegistry, js: JetStreamContext, uid: str) -> None:
    worker = await create(registry, uid)
    stale = worker.etag
    await publish_sample(js, worker, status=W.WORKER_STATUS_RUNNING, cpu_utilization=3.0)
    await eventually(lambda: status_is(registry, worker.id, W.WORKER_STATUS_RUNNING))
    code = await code_of(registry.stub.StopWorker(rs.StopWorkerRequest(id=worker.id, etag=stale)))
    assert code == grpc.StatusCode.ABORTED
    current = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
    assert current.etag != stale
    stopped = (await registry.stub.StopWorker(rs.StopWorkerRequest(id=worker.id, etag=current.etag))).worker
    assert stopped.status == W.WORKER_STATUS_STOPPING and stopped.etag != current.etag


async def test_list_filters_pages_and_refuses_forged_tokens(registry: RunningRegistry, ec2: Any, uid: str) -> None:
    stub = registry.stub
    workers = [await create(registry, uid, n, parity=str(n % 2)) for n in range(7)]
    ids = sorted(w.id for w in workers)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListWorkers(rs.ListWorkersRequest(tags={"test": uid}, page_size=3, page_token=token))
        seen += [w.id for w in page.workers]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ids and pages == 3

    odd = await stub.ListWorkers(rs.ListWorkersRequest(tags={"test": uid, "parity": "1"}))
    assert sorted(w.id for w in odd.workers) == sorted(w.id for w in workers if w.tags["parity"] == "1")
    named = await stub.ListWorkers(rs.ListWorkersRequest(tags={"test": uid}, name_prefix="n3-"))
    assert [w.name for w in named.workers] == [f"n3-{uid}"]
    assert not (await stub.ListWorkers(rs.ListWorkersRequest(tags={"test": uid}, region="eu-west-1"))).workers

    await stub.TerminateWorker(rs.TerminateWorkerRequest(id=workers[0].id))
    first = await stub.ListWorkers(rs.ListWorkersRequest(tags={"test": uid}, page_size=1000))
    assert workers[0].id in {w.id for w in first.workers}  # shutting down is not terminated yet
    await ec2.terminate_instances(InstanceIds=[workers[0].instance_id])

    page = await stub.ListWorkers(rs.ListWorkersRequest(tags={"test": uid}, page_size=2))
    forged = page.next_page_token[:-2] + ("AA" if not page.next_page_token.endswith("AA") else "BB")
    for bad in (rs.ListWorkersRequest(tags={"test": uid}, page_size=2, page_token=forged),
                rs.ListWorkersRequest(tags={"test": "other"}, page_size=2, page_token=page.next_page_token),
                rs.ListWorkersRequest(page_token="not-a-token"),
                rs.ListWorkersRequest(page_size=-1),
                rs.ListWorkersRequest(statuses=[W.WorkerStatus.ValueType(42)])):  # type: ignore[list-item]
        assert await code_of(stub.ListWorkers(bad)) == grpc.StatusCode.INVALID_ARGUMENT


async def test_terminated_hidden_unless_asked(registry: RunningRegistry, js: JetStreamContext, uid: str) -> None:
    stub = registry.stub
    worker = await create(registry, uid)
    await publish_sample(js, worker, status=W.WORKER_STATUS_TERMINATED)
    await eventually(lambda: status_is(registry, worker.id, W.WORKER_STATUS_TERMINATED))
    assert not (await stub.ListWorkers(rs.ListWorkersRequest(tags={"test": uid}))).workers
    shown = await stub.ListWorkers(rs.ListWorkersRequest(tags={"test": uid}, show_terminated=True))
    by_status = await stub.ListWorkers(rs.ListWorkersRequest(tags={"test": uid},
                                                             statuses=[W.WORKER_STATUS_TERMINATED]))
    assert [w.id for w in shown.workers] == [w.id for w in by_status.workers] == [worker.id]


async def test_watch_streams_snapshot_then_changes_and_ends_on_cancel(
        registry: RunningRegistry, js: JetStreamContext, uid: str) -> None:
    worker = await create(registry, uid)
    call = registry.stub.WatchWorkers(rs.WatchWorkersRequest(region=REGION))
    initial_ids: set[str] = set()
    async for item in call:
        if item.initial:
            initial_ids.add(item.worker.id)
            if worker.id in initial_ids:
                await publish_sample(js, worker, status=W.WORKER_STATUS_STOPPED)
        elif item.worker.id == worker.id:
            assert item.worker.status == W.WORKER_STATUS_STOPPED
            assert item.event_type == E.WORKER_EVENT_TYPE_STATUS_CHANGED
            break
    assert worker.id in initial_ids
    assert call.cancel()
    assert await call.code() == grpc.StatusCode.CANCELLED
    # the server carries on serving
    assert (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker.id == worker.id


async def test_watch_ends_cleanly_when_the_server_shuts_down(nats_url: str, aws_endpoint: str,
                                                             js: JetStreamContext, ec2: Any, uid: str) -> None:
    instance_id = await launch_plain_instance(ec2, f"watch-{uid}")
    async with running_registry(registry_settings(nats_url, aws_endpoint)) as running:
        await running.stub.ImportWorker(rs.ImportWorkerRequest(region=REGION, instance_id=instance_id))
        call = running.stub.WatchWorkers(rs.WatchWorkersRequest())
        await call.read()  # the stream is open
        stopper = asyncio.create_task(_stop_soon(running))
        while await call.read() is not grpc.aio.EOF:  # type: ignore[attr-defined]
            pass
        assert await call.code() == grpc.StatusCode.OK
        await stopper


async def _stop_soon(running: RunningRegistry) -> None:
    await asyncio.sleep(0.2)
    running.stop.set()


async def test_trace_context_goes_from_the_call_to_the_event(registry: RunningRegistry, tap: EventTap,
                                                             uid: str) -> None:
    worker = await create(registry, uid)
    trace_id = uid.ljust(32, "0")
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    await registry.stub.StopWorker(rs.StopWorkerRequest(id=worker.id), metadata=(("traceparent", traceparent),))
    await eventually(lambda: tap.of(worker.id, E.WORKER_EVENT_TYPE_STOPPED))
    headers = next(h for e, h in tap.events if e.worker.id == worker.id and e.type == E.WORKER_EVENT_TYPE_STOPPED)
    assert headers["traceparent"].split("-")[1] == trace_id
