"""The shared pull consumer against the real nats-server: its backlog gauges show the durable's pending and
ack-pending counts, and keep-alive holds a message past AckWait without it being handed out again. Each test
has a stream of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import REGISTRY

from cmlmon_core.consuming import ACK, Durable, PullConsumer, PullOptions, fetch_batch, kept_alive, settle
from tests.support import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def stream(js: JetStreamContext, uid: str) -> AsyncIterator[str]:
    name = f"TEST_CONSUMING_{uid}"
    await js.add_stream(name=name, subjects=[f"test.{uid}.>"])
    try:
        yield name
    finally:
        await js.delete_stream(name)


def durable(stream: str, uid: str, ack_wait: float = 30.0) -> Durable:
    return Durable(stream=stream, name="d", filter_subject=f"test.{uid}.>", config=ConsumerConfig(
        ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait, deliver_policy=DeliverPolicy.ALL))


def gauge(name: str, stream: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"stream": stream, "durable": "d"})


async def test_the_backlog_gauges_follow_the_durable(js: JetStreamContext, stream: str, uid: str) -> None:
    for i in range(5):
        await js.publish(f"test.{uid}.{i}", b"x")
    release, stop = asyncio.Event(), asyncio.Event()

    async def hold_then_ack(msgs: list[Msg]) -> None:
        await release.wait()
        for msg in msgs:
            await settle(msg, ACK)

    consumer = PullConsumer(js, durable(stream, uid), PullOptions(batch=2, backlog_seconds=0.1))
    running = asyncio.create_task(consumer.run(hold_then_ack, stop))
    try:
        # Two fetched and held, three not delivered yet.
        await eventually(lambda: (gauge("cmlmon_consumer_pending", stream),
                                  gauge("cmlmon_consumer_ack_pending", stream)) == (3.0, 2.0), timeout=30)
        release.set()
        await eventually(lambda: (gauge("cmlmon_consumer_pending", stream),
                                  gauge("cmlmon_consumer_ack_pending", stream)) == (0.0, 0.0), timeout=30)
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(running, 30)


async def test_a_message_kept_alive_is_not_handed_out_again_past_ack_wait(
        js: JetStreamContext, stream: str, uid: str) -> None:
    await js.publish(f"test.{uid}.1", b"x")
    consumer = PullConsumer(js, durable(stream, uid, ack_wait=1.0))
    sub = await consumer.subscribe()
    other = await js.pull_subscribe_bind(durable="d", stream=stream)  # another replica on the same durable
    try:
        (msg,) = await sub.fetch(1, timeout=10)
        async with kept_alive([msg], every=0.3):
            with pytest.raises(TimeoutError):  # three AckWaits long: it would have come back by now
                await other.fetch(1, timeout=3)
        (again,) = await other.fetch(1, timeout=10)  # no longer kept alive: AckWait runs out, it comes back
        assert again.metadata.sequence.stream == msg.metadata.sequence.stream
        assert again.metadata.num_delivered == 2
        await again.ack()
    finally:
        await other.unsubscribe()
        await sub.unsubscribe()


async def test_fetch_batch_answers_with_what_is_there_as_soon_as_it_is_there(
        js: JetStreamContext, stream: str, uid: str) -> None:
    sub = await PullConsumer(js, durable(stream, uid)).subscribe()
    try:
        assert await fetch_batch(sub, 3, 0.3) == []  # nothing there: [] once the timeout is over
        for i in range(5):
            await js.publish(f"test.{uid}.{i}", b"x")
        first = await fetch_batch(sub, 3, 10)
        rest = await fetch_batch(sub, 3, 10)
        assert [m.subject for m in first + rest] == [f"test.{uid}.{i}" for i in range(5)]
        assert len(first) == 3
        waiting = asyncio.create_task(fetch_batch(sub, 3, 60))
        await asyncio.sleep(0.2)  # the request is at the server, waiting: a message published now ends it
        await js.publish(f"test.{uid}.late", b"x")
        (late,) = await asyncio.wait_for(waiting, 30)  # well before its own 60 s
        assert late.subject == f"test.{uid}.late"
        await js.delete_consumer(stream, "d")
        with pytest.raises(NatsError):  # no consumer to ask: an error for the caller to back off on, not []
            await fetch_batch(sub, 3, 10)
    finally:
        await sub.unsubscribe()
