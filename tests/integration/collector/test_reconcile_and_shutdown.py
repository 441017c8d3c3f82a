"""Reconciliation against a registry over real gRPC heals drift both ways; a first start schedules an
existing fleet from the event stream; a start deletes the tick durable of older versions; a stop naks the
in-flight batch. Each test has a nats-server of its own (reconciliation removes every schedule the registry does
not know)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from cml.monitor.v1 import registry_service_pb2, registry_service_pb2_grpc, worker_pb2
from cmlmon_core import subjects
from cmlmon_core.topology import POLLS_STREAM, ensure_topology
from cmlmon_dev.servers import NatsServer, free_port
from collector.adapters.registry import GrpcRegistry
from collector.adapters.schedules import JetStreamSchedules
from collector.bootstrap import aws_clients
from collector.domain.model import Target
from collector.entrypoints.reconciler import Reconciler
from collector.entrypoints.ticks import OBSOLETE_DURABLE, durable_name
from collector.service.schedules import ScheduleKeeper
from tests.integration.collector.conftest import (
    advisories,
    collector_settings,
    launch,
    publish_event,
    start_collector,
    worker,
)
from tests.support import eventually

REGION = "us-east-1"


class Registry(registry_service_pb2_grpc.WorkerRegistryServiceServicer):
    """ListWorkers over real gRPC, two workers per page, from a list the test controls."""

    def __init__(self, workers: list[worker_pb2.Worker]) -> None:
        self.workers = workers

    async def ListWorkers(self, request: registry_service_pb2.ListWorkersRequest, context: Any
                          ) -> registry_service_pb2.ListWorkersResponse:
        start = int(request.page_token or 0)
        page = self.workers[start:start + 2]
        more = start + 2 < len(self.workers)
        return registry_service_pb2.ListWorkersResponse(workers=page, next_page_token=str(start + 2) if more else "")


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "js", log_file=tmp_path / "nats.log") as server:
        yield server


@pytest.fixture
async def own_js(own_nats: NatsServer) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    nc = await nats.connect(own_nats.url)
    js = nc.jetstream()
    await ensure_topology(js)
    try:
        yield nc, js
    finally:
        await nc.drain()


async def serve_registry(workers: list[worker_pb2.Worker]) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    registry_service_pb2_grpc.add_WorkerRegistryServiceServicer_to_server(Registry(workers), server)  # type: ignore[abstract]
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    await server.start()
    return server, address


async def test_reconciliation_heals_drift_both_ways(own_js: tuple[Client, JetStreamContext], uid: str) -> None:
    nc, js = own_js
    store = JetStreamSchedules(nc, js)
    stale = Target(worker_id=f"gone-{uid}", region=REGION, instance_id="i-11111111", interval_seconds=60)
    drifted = Target(worker_id=f"drift-{uid}", region=REGION, instance_id="i-22222222", interval_seconds=60)
    await store.put(stale)
    await store.put(drifted)
    running = worker_pb2.WORKER_STATUS_RUNNING
    live = [worker_pb2.Worker(id=f"new-{uid}", region=REGION, instance_id="i-33333333", status=running,
                              poll_interval_seconds=30),
            worker_pb2.Worker(id=f"drift-{uid}", region=REGION, instance_id="i-22222222",
                              status=worker_pb2.WORKER_STATUS_STOPPED, poll_interval_seconds=45),
            worker_pb2.Worker(id=f"keep-{uid}", region=REGION, instance_id="i-44444444", status=running),
            worker_pb2.Worker(id=f"dead-{uid}", region=REGION, instance_id="i-55555555",
                              status=worker_pb2.WORKER_STATUS_TERMINATED)]
    server, address = await serve_registry(live)
    try:
        reconciler = Reconciler(GrpcRegistry(address), ScheduleKeeper(store, default_interval=300), interval=60)
        assert await reconciler.once()
        assert await store.worker_ids() == {f"new-{uid}", f"drift-{uid}", f"keep-{uid}"}
        assert (await store.get(f"new-{uid}")) == Target(f"new-{uid}", REGION, "i-33333333", 30)
        assert (await store.get(f"drift-{uid}")) == Target(f"drift-{uid}", REGION, "i-22222222", 45)
        assert (await store.get(f"keep-{uid}")) == Target(f"keep-{uid}", REGION, "i-44444444", 300)
        report = await ScheduleKeeper(store, default_interval=300).reconcile(live)
        assert (report.written, report.removed, report.kept) == (0, 0, 3)  # idempotent
    finally:
        await server.stop(None)


async def test_unreachable_registry_skips_a_round_without_failing(own_js: tuple[Client, JetStreamContext]) -> None:
    nc, js = own_js
    store = JetStreamSchedules(nc, js)
    await store.put(Target(worker_id="w-1", region=REGION, instance_id="i-11111111", interval_seconds=60))
    reconciler = Reconciler(GrpcRegistry(f"127.0.0.1:{free_port()}", timeout=2), ScheduleKeeper(store, 300), 60)
    assert not await reconciler.once()
    assert await store.worker_ids() == {"w-1"}


async def test_first_start_schedules_an_existing_fleet(own_nats: NatsServer, own_js: tuple[Client, JetStreamContext],
                                                       aws_endpoint: str, uid: str) -> None:
    nc, js = own_js
    fleet = [worker(f"{uid}-{i}", REGION, f"i-{i:08x}") for i in range(5)]
    for w in fleet:
        await publish_event(js, w, "imported")
    await publish_event(js, fleet[0], "terminated")
    settings = collector_settings(own_nats.url, aws_endpoint, worker_metrics_poll_interval=600)
    async with aws_clients(settings) as clients:
        running = start_collector(settings, nc, js, clients)
        store = JetStreamSchedules(nc, js)
        try:
            async def healed() -> bool:
                return await store.worker_ids() == {w.id for w in fleet[1:]}

            await eventually(healed, timeout=60)
        finally:
            running.stop.set()
            await asyncio.wait_for(asyncio.gather(*running.tasks), 30)


async def test_a_start_deletes_the_durable_shared_before_region_leases(
        own_nats: NatsServer, own_js: tuple[Client, JetStreamContext], aws_endpoint: str) -> None:
    nc, js = own_js
    await js.add_consumer(POLLS_STREAM, ConsumerConfig(
        durable_name=OBSOLETE_DURABLE, filter_subject=subjects.POLL_TICKS_ALL, ack_policy=AckPolicy.EXPLICIT))
    settings = collector_settings(own_nats.url, aws_endpoint)
    async with aws_clients(settings) as clients:
        running = start_collector(settings, nc, js, clients)
        try:
            async def deleted() -> bool:
                try:
                    await js.consumer_info(POLLS_STREAM, OBSOLETE_DURABLE)
                except NotFoundError:
                    return True
                return False

            await eventually(deleted, timeout=20)
        finally:
            running.stop.set()
            await asyncio.wait_for(asyncio.gather(*running.tasks), 30)


class SlowEc2:
    """An EC2 port that never answers in time: the batch is in flight when the stop comes."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def describe_instance_status(self, region: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        self.started.set()
        await asyncio.sleep(3600)
        return []


# The tests below follow one tick, the one a new worker gets at once: their schedule must not tick again while they
# run. 600 s would be a cron schedule firing on the wall clock's ten-minute boundaries, which a run can straddle
# (a second tick then replaces the first on its subject, and the test follows the wrong one); 601 s is written as
# `@every 601s` (collector.domain.schedule), first firing 601 s after the schedule is written.
ONE_TICK_INTERVAL = 601


async def test_stop_naks_the_in_flight_batch(own_nats: NatsServer, own_js: tuple[Client, JetStreamContext],
                                             aws_endpoint: str, uid: str) -> None:
    nc, js = own_js
    (instance_id,) = launch(aws_endpoint, REGION)
    settings = collector_settings(own_nats.url, aws_endpoint, shutdown_grace_seconds=0.5, tick_ack_wait_seconds=300,
                                  worker_metrics_poll_interval=ONE_TICK_INTERVAL)
    slow = SlowEc2()
    tick_subject = subjects.poll_tick(REGION, f"w-{uid}")
    async with aws_clients(settings) as clients, advisories(nc, POLLS_STREAM, durable_name(REGION)) as told:
        running = start_collector(settings, nc, js, clients, ec2=slow)
        await publish_event(js, worker(uid, REGION, instance_id), "created")
        await asyncio.wait_for(slow.started.wait(), 30)
        tick = await js.get_last_msg(POLLS_STREAM, tick_subject)
        assert not told.about("MSG_NAKED", tick.seq)
        running.stop.set()
        await asyncio.wait_for(asyncio.gather(*running.tasks), 30)
        await eventually(lambda: told.about("MSG_NAKED", tick.seq), timeout=30)
    # Another replica gets the tick at once, not after the 300 s AckWait.
    psub = await js.pull_subscribe_bind(durable=durable_name(REGION), stream=POLLS_STREAM)
    try:
        (msg,) = await psub.fetch(1, timeout=30)
        assert msg.subject == tick_subject
        assert msg.metadata.num_delivered >= 2
        await msg.ack()
    finally:
        await psub.unsubscribe()


async def test_a_hung_region_is_given_up_before_ack_wait_and_naked(
        own_nats: NatsServer, own_js: tuple[Client, JetStreamContext], aws_endpoint: str, uid: str) -> None:
    nc, js = own_js
    (instance_id,) = launch(aws_endpoint, REGION)
    settings = collector_settings(own_nats.url, aws_endpoint, tick_ack_wait_seconds=5, tick_nak_delay_seconds=0.5,
                                  worker_metrics_poll_interval=ONE_TICK_INTERVAL)
    slow = SlowEc2()
    async with aws_clients(settings) as clients, advisories(nc, POLLS_STREAM, durable_name(REGION)) as told:
        running = start_collector(settings, nc, js, clients, ec2=slow)
        try:
            await publish_event(js, worker(uid, REGION, instance_id), "created")
            await asyncio.wait_for(slow.started.wait(), 30)
            tick = await js.get_last_msg(POLLS_STREAM, subjects.poll_tick(REGION, f"w-{uid}"))
            # Given up and nak'ed at its first delivery, before the server would hand it out again (AckWait).
            (naked,) = await eventually(lambda: told.about("MSG_NAKED", tick.seq), timeout=30)
            assert naked["deliveries"] == 1
            assert all(not t.done() for t in running.tasks)  # the replica carries on
        finally:
            running.stop.set()
            await asyncio.wait_for(asyncio.gather(*running.tasks), 30)
