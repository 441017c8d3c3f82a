from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from opentelemetry.sdk.trace import TracerProvider

from cml.monitor.v1 import events_pb2, worker_pb2
from collector.adapters.publisher import JetStreamSamples
from collector.domain.model import Target
from collector.errors import ScheduleError
from collector.service.schedules import ScheduleKeeper
from tests.unit.collector.fakes import FakeStore

RUNNING = worker_pb2.WORKER_STATUS_RUNNING


def event(kind: int, wid: str = "w-1", **fields: Any) -> events_pb2.WorkerEvent:
    fields.setdefault("status", RUNNING)
    worker = worker_pb2.Worker(id=wid, region="us-east-1", instance_id="i-12345678", **fields)
    return events_pb2.WorkerEvent(type=cast(events_pb2.WorkerEventType, kind), worker=worker)


@pytest.mark.parametrize("kind", [events_pb2.WORKER_EVENT_TYPE_CREATED, events_pb2.WORKER_EVENT_TYPE_IMPORTED,
                                  events_pb2.WORKER_EVENT_TYPE_STARTED, events_pb2.WORKER_EVENT_TYPE_STOPPED,
                                  events_pb2.WORKER_EVENT_TYPE_STATUS_CHANGED])
async def test_live_worker_events_write_the_schedule_once_and_poll_at_once(kind: int) -> None:
    store = FakeStore()
    keeper = ScheduleKeeper(store, default_interval=60)
    assert await keeper.apply_event(event(kind)) == "written"
    assert store.schedules["w-1"].interval_seconds == 60 and store.ticks == ["w-1"]
    assert await keeper.apply_event(event(kind)) == "kept"  # re-writing would restart the timer
    assert store.puts == 1 and store.ticks == ["w-1"]


async def test_interval_change_replaces_the_schedule() -> None:
    store = FakeStore()
    keeper = ScheduleKeeper(store, default_interval=60)
    await keeper.apply_event(event(events_pb2.WORKER_EVENT_TYPE_CREATED))
    assert await keeper.apply_event(event(events_pb2.WORKER_EVENT_TYPE_STATUS_CHANGED,
                                          poll_interval_seconds=15)) == "written"
    assert store.schedules["w-1"].interval_seconds == 15


@pytest.mark.parametrize(("kind", "status"), [
    (events_pb2.WORKER_EVENT_TYPE_TERMINATED, worker_pb2.WORKER_STATUS_TERMINATED),
    (events_pb2.WORKER_EVENT_TYPE_TERMINATED, RUNNING),
    (events_pb2.WORKER_EVENT_TYPE_STATUS_CHANGED, worker_pb2.WORKER_STATUS_TERMINATED),
])
async def test_termination_removes_the_schedule(kind: int, status: int) -> None:
    store = FakeStore()
    keeper = ScheduleKeeper(store, default_interval=60)
    await keeper.apply_event(event(events_pb2.WORKER_EVENT_TYPE_CREATED))
    assert await keeper.apply_event(event(kind, status=status)) == "removed"
    assert store.schedules == {}


async def test_worker_id_that_cannot_be_a_subject_token_is_refused() -> None:
    keeper = ScheduleKeeper(FakeStore(), default_interval=60)
    with pytest.raises(ValueError):
        await keeper.ensure(Target(worker_id="a.b", region="us-east-1", instance_id="i-12345678",
                                   interval_seconds=60), cause="event")


async def test_reconcile_keeps_a_schedule_written_after_the_registry_was_asked() -> None:
    store = FakeStore()
    keeper = ScheduleKeeper(store, default_interval=60)
    store.schedules["stale"] = Target("stale", "us-east-1", "i-11111111", 60)
    existing = await keeper.existing()
    await keeper.apply_event(event(events_pb2.WORKER_EVENT_TYPE_CREATED, wid="fresh"))  # not in the answer below
    live = [worker_pb2.Worker(id="kept", region="us-east-1", instance_id="i-22222222", status=RUNNING)]
    report = await keeper.reconcile(live, existing)
    assert set(store.schedules) == {"fresh", "kept"}
    assert (report.written, report.removed, report.kept) == (1, 1, 0)


class CapturingJs:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, dict[str, str]]] = []

    async def publish_async(self, subject: str, data: bytes, headers: dict[str, str], **_: Any
                            ) -> asyncio.Future[None]:
        self.published.append((subject, data, headers))
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stored.set_result(None)
        return stored


async def test_samples_carry_the_trace_context_and_a_dedup_id() -> None:
    js = CapturingJs()
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("poll") as span:
        outcomes = await JetStreamSamples(js).publish(  # type: ignore[arg-type]
            [(events_pb2.MetricSample(worker_id="w-1", region="us-east-1"), "w-1:42")])
    assert outcomes == [None]
    subject, _, headers = js.published[0]
    assert subject == "cml.metrics.us-east-1.w-1"
    assert headers["Nats-Msg-Id"] == "w-1:42"
    assert headers["traceparent"].split("-")[1] == format(span.get_span_context().trace_id, "032x")


async def test_reconcile_skips_a_worker_that_cannot_be_scheduled_and_heals_the_rest() -> None:
    store = FakeStore()
    store.schedules["stale"] = Target("stale", "us-east-1", "i-11111111", 60)
    keeper = ScheduleKeeper(store, default_interval=60)
    live = [worker_pb2.Worker(id="a.b", region="us-east-1", instance_id="i-22222222", status=RUNNING),
            worker_pb2.Worker(id="good", region="us-east-1", instance_id="i-33333333", status=RUNNING)]
    report = await keeper.reconcile(live)  # a ValueError here ended the reconciler's task, and the replica
    assert set(store.schedules) == {"good"}
    assert (report.written, report.removed, report.kept) == (1, 1, 0)


async def test_a_failed_write_fails_the_round_only_after_every_other_change_was_made() -> None:
    class FlakyStore(FakeStore):
        async def put(self, target: Target) -> None:
            if target.worker_id.startswith("bad"):
                raise ScheduleError("nats is down")
            await super().put(target)

    store = FlakyStore()
    store.schedules["stale"] = Target("stale", "us-east-1", "i-11111111", 60)
    live = [worker_pb2.Worker(id=wid, region="us-east-1", instance_id="i-22222222", status=RUNNING)
            for wid in ("bad-1", "bad-2", "good")]
    with pytest.raises(ScheduleError):
        await ScheduleKeeper(store, default_interval=60, concurrency=1).reconcile(live)
    assert set(store.schedules) == {"good"}  # written, and the stale one removed, despite the failures
