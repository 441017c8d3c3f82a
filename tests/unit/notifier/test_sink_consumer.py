"""SinkConsumer behind a sink that hangs: the hanging delivery and the fetched transitions waiting for a slot
are kept alive (else their AckWait runs out and they are delivered twice), and a stop hands them back instead
of waiting for the hanging deliveries to free a slot."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeout

from cml.monitor.v1 import alert_pb2
from cmlmon_core.messages import encode
from notifier.entrypoints import consumers
from notifier.entrypoints.consumers import SinkConsumer


class FakeMsg:
    def __init__(self, n: int) -> None:
        self.subject = f"cml.alerts.w-{n}.cpu_high"
        self.data, self.headers = encode(alert_pb2.Alert(id=f"w-{n}.cpu_high", worker_id=f"w-{n}", rule="cpu_high"))
        self.replies: list[str] = []

    async def ack(self) -> None:
        self.replies.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.replies.append("nak")

    async def term(self) -> None:
        self.replies.append("term")

    async def in_progress(self) -> None:
        self.replies.append("in_progress")


class FakeSub:
    def __init__(self, batch: list[FakeMsg]) -> None:
        self._batch: list[FakeMsg] | None = batch

    async def fetch(self, batch: int, timeout: float) -> list[FakeMsg]:
        if self._batch is None:
            await asyncio.sleep(timeout)
            raise NatsTimeout
        out, self._batch = self._batch, None
        return out

    async def unsubscribe(self) -> None:
        pass


class FakeJs:
    def __init__(self, sub: FakeSub) -> None:
        self._sub = sub

    async def pull_subscribe(self, *args: Any, **kwargs: Any) -> FakeSub:
        return self._sub


class HangingSink:
    name = "hanging"


class HangingDeliverer:
    sink = HangingSink()

    async def deliver(self, *args: Any) -> str:
        await asyncio.Event().wait()
        return "delivered"


async def test_waiting_transitions_are_kept_alive_and_handed_back_on_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumers, "SLOT_POLL_SECONDS", 0.01)
    monkeypatch.setattr(consumers, "KEEPALIVE_SECONDS", 0.05)
    delivering, waiting = FakeMsg(1), FakeMsg(2)
    consumer = SinkConsumer(HangingDeliverer(), publisher=None, concurrency=1)  # type: ignore[arg-type]
    await consumer.subscribe(FakeJs(FakeSub([delivering, waiting])), "durable")  # type: ignore[arg-type]
    stop = asyncio.Event()
    run = asyncio.create_task(consumer.run(stop, grace=0.05))
    deadline = asyncio.get_running_loop().time() + 10
    while waiting.replies.count("in_progress") < 2 or delivering.replies.count("in_progress") < 2:
        assert asyncio.get_running_loop().time() < deadline, (waiting.replies, delivering.replies)
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(run, 10)  # the hanging delivery does not hold the stop
    assert waiting.replies[-1] == "nak" and "ack" not in waiting.replies
    assert delivering.replies[-1] == "nak" and "ack" not in delivering.replies  # cancelled after the grace
