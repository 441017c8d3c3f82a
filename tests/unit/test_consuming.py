"""The shared pull-consumer pattern over fakes: settling (a lost acknowledgement never escapes), per-message
handling, keep-alive, fetching (both timeout kinds, back-off that a stop cuts short, the gathering window),
and the loop (a batch handler's bug does not end it, the subscription is dropped on the way out)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig

from cmlmon_core.consuming import (
    ACK,
    ACK_CONFIRMED,
    TERM,
    Durable,
    Hurry,
    PullConsumer,
    PullOptions,
    Verdict,
    each,
    in_order_per_key,
    kept_alive,
    retry,
    settle,
)
from cmlmon_core.lifecycle import stopped_within
from cmlmon_core.messages import UndecodableMessage
from tests.support import eventually


class FakeMsg:
    def __init__(self, name: str = "m", fail: BaseException | None = None) -> None:
        self.subject = f"test.{name}"
        self.replies: list[tuple[str, float | None]] = []
        self._fail = fail

    async def _reply(self, kind: str, delay: float | None = None) -> None:
        self.replies.append((kind, delay))
        if self._fail is not None:
            raise self._fail

    async def ack(self) -> None:
        await self._reply("ack")

    async def ack_sync(self) -> None:
        await self._reply("ack_sync")

    async def nak(self, delay: float | None = None) -> None:
        await self._reply("nak", delay)

    async def term(self) -> None:
        await self._reply("term")

    async def in_progress(self) -> None:
        await self._reply("in_progress")


def others() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


@pytest.mark.parametrize(("verdict", "reply"), [
    (ACK, ("ack", None)), (ACK_CONFIRMED, ("ack_sync", None)), (TERM, ("term", None)),
    (retry(2.5), ("nak", 2.5)), (retry(), ("nak", None)),
])
async def test_each_verdict_is_one_reply(verdict: Verdict, reply: tuple[str, float | None]) -> None:
    msg = FakeMsg()
    await settle(msg, verdict)  # type: ignore[arg-type]
    assert msg.replies == [reply]


@pytest.mark.parametrize("lost", [ConnectionClosedError(), NatsTimeout(), TimeoutError()])
@pytest.mark.parametrize("verdict", [ACK, ACK_CONFIRMED, TERM, retry(1.0)])
async def test_a_lost_acknowledgement_is_only_logged(verdict: Verdict, lost: Exception) -> None:
    msg = FakeMsg(fail=lost)
    await settle(msg, verdict)  # type: ignore[arg-type]
    assert len(msg.replies) == 1


async def test_each_settles_every_message_in_order_and_a_crash_is_retried() -> None:
    handled: list[str] = []

    async def handle(msg: Any) -> Verdict:
        handled.append(msg.subject)
        if msg.subject == "test.bug":
            raise KeyError("a bug")
        return TERM if msg.subject == "test.junk" else ACK

    good, bug, junk, last = FakeMsg("good"), FakeMsg("bug"), FakeMsg("junk"), FakeMsg("last")
    await each(handle, retry_delay=3.0)([good, bug, junk, last])  # type: ignore[list-item]
    assert handled == ["test.good", "test.bug", "test.junk", "test.last"]
    assert (good.replies, bug.replies, junk.replies, last.replies) == (
        [("ack", None)], [("nak", 3.0)], [("term", None)], [("ack", None)])


@pytest.mark.parametrize("yield_every", [0.0, 0.002])
async def test_each_lets_other_tasks_run_during_a_long_batch_only_when_asked(yield_every: float) -> None:
    events: list[str] = []

    async def handle(msg: Any) -> Verdict:  # never waits for anything, like a sample decided from a cache
        end = time.perf_counter() + 0.003  # longer than yield_every
        while time.perf_counter() < end:
            pass
        events.append(msg.subject)
        return ACK

    async def other() -> None:
        events.append("other")

    handle_batch = each(handle, 1.0, yield_every=yield_every)
    batch = asyncio.ensure_future(handle_batch([FakeMsg("a"), FakeMsg("b")]))  # type: ignore[list-item]
    await asyncio.gather(batch, asyncio.create_task(other()))  # the batch starts first
    expected = ["test.a", "other", "test.b"] if yield_every else ["test.a", "test.b", "other"]
    assert events == expected


@pytest.mark.parametrize("hurried", [False, True])
async def test_each_lets_other_tasks_run_after_every_message_while_hurried(hurried: bool) -> None:
    events: list[str] = []

    async def handle(msg: Any) -> Verdict:  # instant: far inside the batch's yield_every
        events.append(msg.subject)
        return ACK

    async def other() -> None:
        events.append("other")

    hurry = Hurry(60.0)
    if hurried:
        hurry.start()
    handle_batch = each(handle, 1.0, yield_every=60.0, hurry=hurry)
    batch = asyncio.ensure_future(handle_batch([FakeMsg("a"), FakeMsg("b")]))  # type: ignore[list-item]
    await asyncio.gather(batch, asyncio.create_task(other()))  # the batch starts first
    assert events == (["test.a", "other", "test.b"] if hurried else ["test.a", "test.b", "other"])


async def test_in_order_per_key_keeps_each_keys_order_overlaps_keys_and_terms_the_undecodable() -> None:
    # subjects "test.<key>-<n>"; "test.junk" cannot be decoded
    def decode(msg: Any) -> tuple[str, str]:
        if msg.subject == "test.junk":
            raise UndecodableMessage("junk")
        return msg.subject.split(".")[1].split("-")[0], msg.subject

    started: list[str] = []
    a1_may_finish = asyncio.Event()

    async def handle(msg: Any, item: str) -> Verdict:
        started.append(item)
        if item == "test.a-1":
            await a1_may_finish.wait()  # b's messages must not wait for a's
        return retry(1.0) if item == "test.b-2" else ACK

    msgs = [FakeMsg(n) for n in ("a-1", "b-1", "junk", "a-2", "b-2")]
    batch: asyncio.Task[None] = asyncio.create_task(in_order_per_key(decode, handle)(msgs))  # type: ignore[arg-type]
    await eventually(lambda: started == ["test.a-1", "test.b-1", "test.b-2"])  # a-2 waits behind a-1
    a1_may_finish.set()
    await batch
    assert started == ["test.a-1", "test.b-1", "test.b-2", "test.a-2"]
    assert [m.replies for m in msgs] == [[("ack", None)], [("ack", None)], [("term", None)], [("ack", None)],
                                         [("nak", 1.0)]]


async def test_kept_alive_reports_progress_while_the_body_runs_and_not_after() -> None:
    msgs = [FakeMsg("a"), FakeMsg("b", fail=ConnectionClosedError())]  # a lost report stops nothing
    async with kept_alive(msgs, every=0.01):  # type: ignore[arg-type]
        await eventually(lambda: len(msgs[0].replies) >= 3 and len(msgs[1].replies) >= 3, timeout=5)
    reported = len(msgs[0].replies)
    assert others() == set()
    await asyncio.sleep(0.05)
    assert len(msgs[0].replies) == reported
    assert set(msgs[0].replies) == {("in_progress", None)}


class ScriptedSub:
    """A pull subscription whose fetches answer from a script: a list of messages, or an exception."""

    def __init__(self, script: list[list[Any] | BaseException], stop: asyncio.Event | None = None) -> None:
        self.script = script
        self.stop = stop
        self.fetches = 0
        self.unsubscribed = False

    async def fetch(self, batch: int, timeout: float) -> list[Any]:
        self.fetches += 1
        if not self.script:
            if self.stop is not None:
                self.stop.set()
            raise NatsTimeout
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    async def unsubscribe(self) -> None:
        self.unsubscribed = True


class FakeJs:
    def __init__(self, sub: Any, unavailable: int = 0) -> None:
        self.sub = sub
        self.unavailable = unavailable  # how many subscribes time out first

    async def pull_subscribe(self, *args: Any, **kwargs: Any) -> Any:
        if self.unavailable:
            self.unavailable -= 1
            raise NatsTimeout
        return self.sub


def pull(sub: Any, **options: Any) -> PullConsumer:
    durable = Durable(stream="S", name="d", filter_subject="s.>", config=ConsumerConfig())
    return PullConsumer(FakeJs(sub), durable, PullOptions(**options))  # type: ignore[arg-type]


@pytest.mark.parametrize("nothing", [NatsTimeout(), TimeoutError()])
async def test_a_fetch_that_finds_nothing_is_an_empty_batch(nothing: Exception) -> None:
    sub = ScriptedSub([nothing])
    assert await pull(sub).fetch(sub, asyncio.Event()) == []  # type: ignore[arg-type]


async def test_gathering_starts_with_the_first_message_not_with_an_empty_fetch() -> None:
    # An empty fetch (nats-py returns [] when the server's expiry of the pull arrives first) opens no gathering
    # window: otherwise messages arriving as that window closes were cut into two batches.
    sub = ScriptedSub([[], ["a"], ["b"], ["c"]])
    consumer = pull(sub, gather_seconds=30)
    assert await consumer.fetch(sub, asyncio.Event()) == []  # type: ignore[arg-type]
    assert sub.fetches == 1
    gathered: list[Any] = await consumer.fetch(sub, asyncio.Event())  # type: ignore[arg-type]
    assert gathered == ["a", "b", "c"]


async def test_a_failed_fetch_backs_off_until_a_stop_cuts_it_short() -> None:
    sub = ScriptedSub([ConnectionClosedError()])
    stop = asyncio.Event()
    fetching = asyncio.create_task(pull(sub, retry_seconds=3600).fetch(sub, stop))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not fetching.done()  # backing off
    stop.set()
    assert await asyncio.wait_for(fetching, 5) == []
    await asyncio.sleep(0)
    assert others() == set()


async def test_the_loop_survives_a_batch_handler_bug_and_unsubscribes_on_the_way_out() -> None:
    stop = asyncio.Event()
    sub = ScriptedSub([["first"], ConnectionClosedError(), ["second"]], stop=stop)  # a stop once drained
    seen: list[list[str]] = []
    consumer = pull(sub, retry_seconds=0.01)

    async def handle_batch(msgs: list[Any]) -> None:
        assert consumer.consuming.is_set()  # bound to the durable: what readiness probes read
        seen.append(msgs)
        raise RuntimeError("a bug")

    await asyncio.wait_for(consumer.run(handle_batch, stop), 5)
    assert seen == [["first"], ["second"]]
    assert sub.unsubscribed and not consumer.consuming.is_set()


async def test_a_busy_server_is_asked_again_until_the_durable_is_there() -> None:
    stop = asyncio.Event()
    sub = ScriptedSub([["first"]], stop=stop)
    js = FakeJs(sub, unavailable=2)
    durable = Durable(stream="S", name="d", filter_subject="s.>", config=ConsumerConfig())
    seen: list[list[str]] = []

    async def handle_batch(msgs: list[Any]) -> None:
        seen.append(msgs)

    consumer = PullConsumer(js, durable, PullOptions(retry_seconds=0.01))  # type: ignore[arg-type]
    await asyncio.wait_for(consumer.run(handle_batch, stop), 5)
    assert js.unavailable == 0 and seen == [["first"]]


async def test_a_stop_ends_the_retries_of_a_subscribe() -> None:
    js = FakeJs(ScriptedSub([]), unavailable=10**6)
    durable = Durable(stream="S", name="d", filter_subject="s.>", config=ConsumerConfig())
    stop = asyncio.Event()
    consumer = PullConsumer(js, durable, PullOptions(retry_seconds=3600))  # type: ignore[arg-type]
    running = asyncio.create_task(consumer.run(lambda msgs: asyncio.sleep(0), stop))
    await asyncio.sleep(0.05)
    assert not running.done()
    stop.set()
    await asyncio.wait_for(running, 5)


class SpreadTicks:
    """A pull subscription whose messages become available at given offsets (seconds) from its creation."""

    def __init__(self, arrivals: list[float]) -> None:
        self.arrivals = sorted(arrivals)
        self.start = asyncio.get_running_loop().time()
        self.timeouts: list[float] = []

    def _now(self) -> float:
        return asyncio.get_running_loop().time() - self.start

    async def fetch(self, batch: int, timeout: float) -> list[str]:
        self.timeouts.append(timeout)
        if not self.arrivals or self.arrivals[0] - self._now() > timeout:
            await asyncio.sleep(timeout)
            raise TimeoutError
        await asyncio.sleep(max(0.0, self.arrivals[0] - self._now()))
        ready = [a for a in self.arrivals if a <= self._now()][:batch]
        del self.arrivals[:len(ready)]
        return [f"tick@{a}" for a in ready]


async def gather(psub: SpreadTicks, gather_seconds: float, batch: int | Callable[[], int] = 1000) -> list[Any]:
    consumer = pull(psub, gather_seconds=gather_seconds, batch=batch)
    return await consumer.fetch(psub, asyncio.Event())  # type: ignore[arg-type]


async def test_messages_spread_over_the_window_are_gathered_into_one_batch() -> None:
    psub = SpreadTicks([0.0, 0.1, 0.2, 0.3])
    assert await gather(psub, gather_seconds=1.0) == ["tick@0.0", "tick@0.1", "tick@0.2", "tick@0.3"]


async def test_the_gathering_window_bounds_the_wait() -> None:
    psub = SpreadTicks([0.0, 0.05, 60.0])
    assert await gather(psub, gather_seconds=0.3) == ["tick@0.0", "tick@0.05"]  # the last is the next batch's
    assert all(t <= 0.3 for t in psub.timeouts[1:])


async def test_a_full_batch_is_not_held_for_the_window() -> None:
    psub = SpreadTicks([0.0, 0.0, 0.0, 60.0])
    assert len(await gather(psub, gather_seconds=30.0, batch=3)) == 3
    assert len(psub.timeouts) == 1


async def test_the_batch_size_is_asked_before_each_fetch() -> None:
    room = [2]
    psub = SpreadTicks([0.0, 0.0, 0.0])
    assert len(await gather(psub, gather_seconds=30.0, batch=lambda: room[0])) == 2
    room[0] = 0  # never fewer than one
    assert len(await gather(psub, gather_seconds=0.0, batch=lambda: room[0])) == 1


async def test_stopped_within_ends_at_stop_at_wake_or_at_the_timeout_and_leaves_no_task() -> None:
    stop, wake = asyncio.Event(), asyncio.Event()
    assert await stopped_within(stop, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, wake.set)
    assert await asyncio.wait_for(stopped_within(stop, 3600, wake=wake), 5) is False
    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await asyncio.wait_for(stopped_within(stop, 3600), 5) is True
    await asyncio.sleep(0)
    assert others() == set()
