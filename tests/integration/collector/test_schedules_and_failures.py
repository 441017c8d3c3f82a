"""Schedules follow lifecycle events; unknown instances, stopped instances, bad ticks and failing regions are
handled per worker or per region, against real nats-server and moto."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from cml.monitor.v1 import events_pb2, worker_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.topology import POLLS_STREAM
from collector.adapters.aws import AwsPoller
from collector.bootstrap import aws_clients, retry_policy
from collector.domain.schedule import schedule_expression
from collector.entrypoints.ticks import durable_name
from collector.errors import AwsError
from tests.integration.collector.conftest import (
    INTERVAL,
    RunningCollector,
    SampleWatch,
    advisories,
    collector_settings,
    ec2_client,
    launch,
    publish_event,
    put_metrics,
    start_collector,
    worker,
)
from tests.support import eventually

REGION = "us-east-1"


@dataclass(frozen=True)
class Schedule:
    """A worker's schedule as CML_POLLS holds it: the message on cml.polls.schedule.<id>."""

    seq: int
    expression: str
    target_subject: str
    tick: events_pb2.PollTick


async def schedule_of(js: JetStreamContext, worker_id: str) -> Schedule | None:
    try:
        raw = await js.get_last_msg(POLLS_STREAM, subjects.poll_schedule(worker_id))
    except NotFoundError:
        return None
    headers = raw.headers or {}
    return Schedule(raw.seq or 0, headers.get("Nats-Schedule", ""), headers.get("Nats-Schedule-Target", ""),
                    messages.decode(events_pb2.PollTick, raw.data or b"", raw.headers))


async def polls_held_for(js: JetStreamContext, worker_id: str) -> dict[str, int]:
    """Every subject of CML_POLLS about the worker (its schedule, its ticks), with its message count."""
    held: dict[str, int] = {}
    for pattern in (subjects.poll_schedule(worker_id), f"cml.polls.tick.*.{worker_id}"):
        info = await js.stream_info(POLLS_STREAM, subjects_filter=pattern)
        held.update(info.state.subjects or {})
    return held


async def test_interval_change_replaces_and_termination_removes_the_schedule(
        js: JetStreamContext, aws_endpoint: str, collector: RunningCollector, watch: SampleWatch, uid: str) -> None:
    (instance_id,) = launch(aws_endpoint, REGION)
    w = worker(uid, REGION, instance_id)
    tick_subject = subjects.poll_tick(REGION, w.id)
    await publish_event(js, w, "imported")
    await watch.wait_for(lambda s: s.worker_id == w.id)  # polled: the schedule exists and its tick was taken
    first = await schedule_of(js, w.id)
    assert first is not None
    assert (first.expression, first.target_subject, first.tick.interval_seconds) == (
        schedule_expression(INTERVAL), tick_subject, INTERVAL)

    w.poll_interval_seconds = 7
    await publish_event(js, w, "status_changed")

    async def replaced() -> Schedule | None:
        now = await schedule_of(js, w.id)
        return now if now is not None and now.seq > first.seq else None
    second = await eventually(replaced)
    assert (second.expression, second.target_subject, second.tick.interval_seconds) == (
        "@every 7s", tick_subject, 7)
    assert (await polls_held_for(js, w.id))[subjects.poll_schedule(w.id)] == 1  # replaced, not added
    assert tick_subject in await polls_held_for(js, w.id)  # the tick the new schedule polled at once

    w.status = worker_pb2.WORKER_STATUS_TERMINATED
    await publish_event(js, w, "terminated")

    async def nothing_held() -> bool:
        return not await polls_held_for(js, w.id)
    # The schedule gone means the server fires no more ticks for it; its last tick is purged too, so no
    # collector polls a terminated worker again.
    await eventually(nothing_held)


async def test_unknown_instance_is_reported_alone_and_stopped_instance_has_no_metrics(
        js: JetStreamContext, aws_endpoint: str, collector: RunningCollector, watch: SampleWatch, uid: str) -> None:
    good, stopped = launch(aws_endpoint, REGION, count=2)
    ec2_client(aws_endpoint, REGION).stop_instances(InstanceIds=[stopped])
    put_metrics(aws_endpoint, REGION, good, cpu=12.0, memory=34.0)
    put_metrics(aws_endpoint, REGION, stopped, cpu=50.0, memory=50.0)
    workers = [worker(f"{uid}-a", REGION, good), worker(f"{uid}-b", REGION, stopped),
               worker(f"{uid}-c", REGION, "i-0123456789abcdef0"), worker(f"{uid}-d", REGION, "bogus")]
    try:
        for w in workers:
            await publish_event(js, w, "created")
        a = await watch.wait_for(lambda s: s.worker_id == workers[0].id and s.HasField("cpu_utilization"))
        b = await watch.wait_for(lambda s: s.worker_id == workers[1].id)
        c = await watch.wait_for(lambda s: s.worker_id == workers[2].id)
        d = await watch.wait_for(lambda s: s.worker_id == workers[3].id)
        assert (a.cpu_utilization, a.memory_utilization, a.instance_missing) == (12.0, 34.0, False)
        assert b.status == worker_pb2.WORKER_STATUS_STOPPED and b.ec2_state == "stopped"
        assert not b.HasField("cpu_utilization") and not b.HasField("memory_utilization")
        assert b.system_status_check == worker_pb2.STATUS_CHECK_NOT_APPLICABLE
        for missing in (c, d):
            assert missing.instance_missing and missing.status == worker_pb2.WORKER_STATUS_TERMINATED
    finally:
        for w in workers:
            await publish_event(js, w, "terminated")


async def test_undecodable_tick_is_terminated_and_the_consumer_carries_on(
        nc: Client, js: JetStreamContext, aws_endpoint: str, collector: RunningCollector, watch: SampleWatch,
        uid: str) -> None:
    async with advisories(nc, POLLS_STREAM, durable_name(REGION)) as told:
        junk = await js.publish(subjects.poll_tick(REGION, f"junk-{uid}"), b"\xff\xff\xff",
                                headers={"Content-Type": "application/protobuf; proto=cml.monitor.v1.PollTick"})
        (instance_id,) = launch(aws_endpoint, REGION)
        w = worker(uid, REGION, instance_id)
        await publish_event(js, w, "created")
        try:
            await watch.wait_for(lambda s: s.worker_id == w.id)
            (terminated,) = await eventually(lambda: told.about("MSG_TERMINATED", junk.seq))
            assert terminated["deliveries"] == 1  # at its first delivery: never retried
            assert "reason" not in terminated  # by the consumer, not deleted by the stream
            assert not told.about("MSG_NAKED", junk.seq)
        finally:
            await publish_event(js, w, "terminated")


class FailingRegion:
    """The real AWS adapter, except that one region always answers with throttling."""

    def __init__(self, real: AwsPoller, region: str) -> None:
        self.real = real
        self.region = region
        self.calls = 0

    async def describe_instance_status(self, region: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        if region == self.region:
            self.calls += 1
            raise AwsError("DescribeInstanceStatus", region, "RequestLimitExceeded", "slow down", retryable=True)
        return await self.real.describe_instance_status(region, ids)


@pytest.mark.parametrize("bad_region", ["eu-north-1"])
async def test_a_failing_region_is_naked_and_redelivered_while_others_are_polled(
        nc: Client, js: JetStreamContext, nats_url: str, aws_endpoint: str, watch: SampleWatch, uid: str,
        bad_region: str) -> None:
    settings = collector_settings(nats_url, aws_endpoint, service_instance_id=f"failing-{uid}")
    async with aws_clients(settings) as clients, advisories(nc, POLLS_STREAM, durable_name(bad_region)) as told:
        real = AwsPoller(clients, retry_policy(settings), 4)
        failing = FailingRegion(real, bad_region)
        running = start_collector(settings, nc, js, clients, ec2=failing, metrics=real)
        (ok_instance,) = launch(aws_endpoint, REGION)
        (bad_instance,) = launch(aws_endpoint, bad_region)
        good, bad = worker(f"{uid}-ok", REGION, ok_instance), worker(f"{uid}-bad", bad_region, bad_instance)
        good_tick, bad_tick = subjects.poll_tick(REGION, good.id), subjects.poll_tick(bad_region, bad.id)

        async def bad_tick_naked() -> bool:
            return bad_tick in await told.subjects("MSG_NAKED", js, POLLS_STREAM)
        try:
            await publish_event(js, bad, "created")
            await publish_event(js, good, "created")
            for _ in range(2):  # the healthy region keeps being polled
                seen = sum(1 for s in watch.samples if s.worker_id == good.id)

                def more(_: object, seen: int = seen) -> bool:
                    return sum(1 for x in watch.samples if x.worker_id == good.id) > seen

                await watch.wait_for(more)

            async def retried() -> bool:
                return failing.calls >= 2
            await eventually(retried, timeout=30)
            await eventually(bad_tick_naked, timeout=30)
            assert good_tick not in await told.subjects("MSG_NAKED", js, POLLS_STREAM)
            assert not any(s.worker_id == bad.id for s in watch.samples if s.collector_id == f"failing-{uid}")
        finally:
            await publish_event(js, bad, "terminated")
            await publish_event(js, good, "terminated")
            running.stop.set()
            await asyncio.wait_for(asyncio.gather(*running.tasks), 30)
