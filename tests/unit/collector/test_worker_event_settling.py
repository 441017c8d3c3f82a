"""How WorkerEventConsumer settles each event: applied -> ack, a store failure -> nak with the retry delay
(the event comes back), a message that can never be applied -> term (it would come back forever)."""

from __future__ import annotations

from typing import Any

from cml.monitor.v1 import events_pb2
from cmlmon_core import consuming, messages
from collector.domain.model import Target
from collector.entrypoints.worker_events import WorkerEventConsumer
from collector.errors import ScheduleError
from collector.service.schedules import ScheduleKeeper
from tests.unit.collector.fakes import FakeStore
from tests.unit.collector.test_schedule_keeper import event


class FakeMsg:
    def __init__(self, data: bytes, headers: dict[str, str] | None) -> None:
        self.data, self.headers, self.subject = data, headers, "cml.workers.w-1.created"
        self.settled: list[tuple[str, float | None]] = []

    async def ack_sync(self) -> None:
        self.settled.append(("ack", None))

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append(("nak", delay))

    async def term(self) -> None:
        self.settled.append(("term", None))


class BrokenStore(FakeStore):
    async def put(self, target: Target) -> None:
        raise ScheduleError("nats is down")


def msg_of(e: events_pb2.WorkerEvent) -> FakeMsg:
    return FakeMsg(*messages.encode(e))


async def settle(msg: FakeMsg, store: FakeStore | None = None) -> list[tuple[str, float | None]]:
    none: Any = None
    consumer = WorkerEventConsumer(none, ScheduleKeeper(store or FakeStore(), default_interval=60), retry_delay=2.5)
    await consuming.settle(msg, await consumer.handle(msg))  # type: ignore[arg-type]
    return msg.settled


async def test_an_applied_event_is_acked() -> None:
    store = FakeStore()
    assert await settle(msg_of(event(events_pb2.WORKER_EVENT_TYPE_CREATED)), store) == [("ack", None)]
    assert "w-1" in store.schedules


async def test_a_store_failure_naks_with_the_retry_delay() -> None:
    msg = msg_of(event(events_pb2.WORKER_EVENT_TYPE_CREATED))
    assert await settle(msg, BrokenStore()) == [("nak", 2.5)]


async def test_an_undecodable_event_is_terminated() -> None:
    assert await settle(FakeMsg(b"\xff\xff", {"Content-Type": "application/protobuf; proto=cml.monitor.v1.WorkerEvent"})
                        ) == [("term", None)]


async def test_a_worker_id_that_cannot_be_a_subject_token_is_terminated() -> None:
    msg = msg_of(event(events_pb2.WORKER_EVENT_TYPE_CREATED, wid="w.1"))
    assert await settle(msg) == [("term", None)]
