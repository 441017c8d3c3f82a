"""The one way this project consumes JetStream: a durable pull consumer.

A consumer states what it subscribes to (a `Durable`) and what it does with a batch of messages; `PullConsumer`
does the rest: create or bind the durable (asking again while the server is busy or away), fetch until stop (a
fetch that finds nothing raises either nats' TimeoutError or the bare asyncio one), back off after a failed
fetch without delaying a stop, keep a batch handler's bug from ending the consumer, report the durable's backlog
(gauges cmlmon_consumer_pending and cmlmon_consumer_ack_pending), and unsubscribe on the way out.

Settling is `settle(msg, verdict)`: ack, nak (with a delay) or term. A lost acknowledgement (connection gone,
timeout) is only logged: the server hands the message out again after AckWait, which every handler here
tolerates. `kept_alive` reports long handling in progress so AckWait does not run out meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, StatusCode
from nats.js.errors import APIError, ServiceUnavailableError
from prometheus_client import Gauge

from cml.monitor.v1 import events_pb2
from cmlmon_core import messages
from cmlmon_core.lifecycle import stopped_within
from cmlmon_core.messages import UndecodableMessage

log = logging.getLogger(__name__)
T = TypeVar("T")

PENDING = Gauge("cmlmon_consumer_pending", "messages of the stream the durable has not delivered yet",
                ["stream", "durable"])
ACK_PENDING = Gauge("cmlmon_consumer_ack_pending", "messages the durable delivered that are not acknowledged yet",
                    ["stream", "durable"])

BatchHandler = Callable[[list[Msg]], Awaitable[None]]

_UNAVAILABLE = (TimeoutError, NoRespondersError, ServiceUnavailableError)
BACKLOG_REFRESH_SECONDS = 15.0
_MIN_FETCH_TIMEOUT = 0.05  # a gathering fetch with less time left than this is not worth a round trip


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a handled message is settled."""

    kind: Literal["ack", "nak", "term"]
    delay: float | None = None  # nak: redeliver after this many seconds (None: at once)
    confirm: bool = False  # ack: wait for the server to confirm it


ACK = Verdict("ack")
ACK_CONFIRMED = Verdict("ack", confirm=True)
TERM = Verdict("term")  # never deliver it again: it can never be handled


def retry(delay: float | None = None) -> Verdict:
    """Hand the message back, to be delivered again after `delay` seconds (at once when None)."""
    return Verdict("nak", delay)


async def settle(msg: Msg, verdict: Verdict) -> None:
    """Ack, nak or term msg; a failure to do so is logged, never raised (the message comes back after AckWait)."""
    try:
        if verdict.kind == "ack":
            await (msg.ack_sync() if verdict.confirm else msg.ack())
        elif verdict.kind == "nak":
            await msg.nak(delay=verdict.delay)
        else:
            await msg.term()
    except (NatsError, TimeoutError) as exc:
        log.warning("settling a message failed", extra={"subject": msg.subject, "settle": verdict.kind,
                                                         "error": repr(exc)})


async def _report_in_progress(msgs: Sequence[Msg], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        for msg in msgs:
            try:
                await msg.in_progress()
            except (NatsError, TimeoutError) as exc:
                log.warning("reporting progress failed", extra={"subject": msg.subject, "error": repr(exc)})


@contextlib.asynccontextmanager
async def kept_alive(msgs: Sequence[Msg], every: float) -> AsyncIterator[None]:
    """While the body runs, tell the server every `every` seconds that msgs are still being worked on; keep
    `every` well under AckWait, or the server hands them out again and they are handled twice."""
    task = asyncio.create_task(_report_in_progress(list(msgs), every))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def judge(handle: Callable[[Msg], Awaitable[Verdict]], msg: Msg, retry_delay: float) -> Verdict:
    """handle(msg)'s verdict. A handler that raises instead of giving one has a bug: that is logged, and the
    message is retried after retry_delay (the consumer carries on)."""
    try:
        return await handle(msg)
    except Exception:
        log.exception("handling crashed; will be redelivered", extra={"subject": msg.subject})
        return retry(retry_delay)


class Hurry:
    """A window during which a batch handler of `each(hurry=...)` lets the event loop run after every message
    instead of every yield_every seconds: another task of the process has latency-bound work in flight (an alert
    on its way to a webhook) that needs a turn of the loop at each of its steps (a fetch answered, a task
    started, a request written, a response read) and would otherwise wait up to yield_every at every one."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.until = 0.0  # time.perf_counter() until which handlers hurry

    def start(self) -> None:
        """Hurry for the next `window` seconds (from now, however long an earlier window still had)."""
        self.until = time.perf_counter() + self.window


def each(handle: Callable[[Msg], Awaitable[Verdict]], retry_delay: float, *, yield_every: float = 0.0,
         hurry: Hurry | None = None) -> BatchHandler:
    """A batch handler that judges and settles its messages one after the other, in order.

    Messages handled without waiting for I/O (an ack does not wait) hold the event loop until the batch ends;
    with yield_every, the loop runs the other tasks whenever that many seconds of handling have passed, so
    a consumer of a busy stream delays the process's other work by at most about that much. While `hurry` is on
    (a window another task started), it lets the loop run after every message."""
    pause = yield_every if yield_every > 0 else math.inf
    window = hurry or Hurry(0.0)

    async def handle_batch(msgs: list[Msg]) -> None:
        due = time.perf_counter() + pause
        for msg in msgs:
            await settle(msg, await judge(handle, msg, retry_delay))
            now = time.perf_counter()
            if now >= due or now < window.until:
                await asyncio.sleep(0)
                due = time.perf_counter() + pause
    return handle_batch


def in_order_per_key(decode: Callable[[Msg], tuple[str, T]],
                     handle: Callable[[Msg, T], Awaitable[Verdict]]) -> BatchHandler:
    """A batch handler for messages handled in order per key (a worker's samples) and concurrently across keys.
    `decode` gives a message's key and payload, or raises UndecodableMessage: that message is terminated (it can
    never be handled). Each message is settled as `handle` judges it; an exception from `handle` fails the batch
    (the consumer logs it; unsettled messages come back after AckWait)."""
    async def handle_batch(msgs: list[Msg]) -> None:
        groups: dict[str, list[tuple[Msg, T]]] = defaultdict(list)
        for msg in msgs:
            try:
                key, item = decode(msg)
            except UndecodableMessage:
                await settle(msg, TERM)
                continue
            groups[key].append((msg, item))

        async def in_order(items: list[tuple[Msg, T]]) -> None:
            for msg, item in items:
                await settle(msg, await handle(msg, item))

        await asyncio.gather(*(in_order(items) for items in groups.values()))
    return handle_batch


@dataclass(frozen=True, slots=True)
class Durable:
    """What a consumer subscribes to: a durable consumer of `stream`, filtered to `filter_subject`.

    `config` holds the rest (ack policy, AckWait, max_ack_pending, deliver policy); its name and filter are
    set from the fields above. With `update_config`, an existing durable is brought to this config (for
    settings that must follow the service); without, the first config stays (for a start position, which
    the server would refuse to change)."""

    stream: str
    name: str
    filter_subject: str
    config: ConsumerConfig
    update_config: bool = False

    def consumer_config(self) -> ConsumerConfig:
        return dataclasses.replace(self.config, durable_name=self.name, filter_subject=self.filter_subject)


@dataclass(frozen=True, slots=True)
class PullOptions:
    batch: int | Callable[[], int] = 256  # messages per fetch; a callable is asked before every fetch
    fetch_timeout: float = 1.0  # also how soon an idle consumer notices a stop
    gather_seconds: float = 0.0  # after the first messages, keep fetching this long to fill the batch
    retry_seconds: float = 1.0  # back-off after a failed fetch or subscribe
    backlog_seconds: float = BACKLOG_REFRESH_SECONDS  # how often the backlog gauges are refreshed


class PullConsumer:
    def __init__(self, js: JetStreamContext, durable: Durable, options: PullOptions | None = None) -> None:
        self._js = js
        self.durable = durable
        self._opts = options or PullOptions()
        self._sub: JetStreamContext.PullSubscription | None = None
        self.consuming = asyncio.Event()  # set while run is bound to the durable (readiness probes read it)

    async def subscribe(self) -> JetStreamContext.PullSubscription:
        """Create (or bind to) the durable; idempotent. Call it early when nothing may be missed before run."""
        if self._sub is None:
            d = self.durable
            if d.update_config:
                await self._js.add_consumer(d.stream, d.consumer_config())
                self._sub = await self._js.pull_subscribe_bind(durable=d.name, stream=d.stream)
            else:
                self._sub = await self._js.pull_subscribe(d.filter_subject, durable=d.name, stream=d.stream,
                                                          config=d.consumer_config())
        return self._sub

    async def run(self, handle_batch: BatchHandler, stop: asyncio.Event) -> None:
        """Fetch and handle batches until stop is set; the batch in hand is handled first."""
        extra = {"stream": self.durable.stream, "durable": self.durable.name}
        while True:
            try:
                sub = await self.subscribe()
                break
            except _UNAVAILABLE as exc:  # a busy or restarting server; a refused config still fails the start
                log.warning("subscribing failed; retrying", extra={**extra, "error": repr(exc)})
                if await stopped_within(stop, self._opts.retry_seconds):
                    return
        log.info("consuming", extra=extra)
        self.consuming.set()
        backlog = asyncio.create_task(self._report_backlog(sub, stop))
        try:
            while not stop.is_set():
                msgs = await self.fetch(sub, stop)
                if not msgs:
                    continue
                try:
                    await handle_batch(msgs)
                except Exception:  # a bug in one batch must not end the consumer: its messages come back
                    log.exception("handling a batch failed", extra=extra)
        finally:
            self.consuming.clear()
            backlog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await backlog
            # a pull subscription left to the connection's drain keeps it waiting for its whole timeout
            try:
                await sub.unsubscribe()
            except NatsError as exc:
                log.debug("unsubscribe failed", extra={**extra, "error": repr(exc)})
            self._sub = None

    async def fetch(self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event) -> list[Msg]:
        """Block up to fetch_timeout for the first messages, then keep taking them for the gathering window
        (messages that arrive spread out still make one batch); [] when there was nothing or fetching failed."""
        want = self._batch_size()
        try:
            msgs = await fetch_batch(sub, want, self._opts.fetch_timeout)
        except TimeoutError:  # nats' own TimeoutError is one too
            return []
        except Exception as exc:  # connection trouble: the client reconnects; keep asking, unless stopping
            if not stop.is_set():
                log.warning("fetching failed", extra={"stream": self.durable.stream, "durable": self.durable.name,
                                                      "error": repr(exc)})
                await stopped_within(stop, self._opts.retry_seconds)
            return []
        if not msgs:  # nats-py answers an expired pull with [] as often as with a timeout: nothing to gather for
            return []
        deadline = time.monotonic() + self._opts.gather_seconds
        while len(msgs) < want and not stop.is_set():
            left = deadline - time.monotonic()
            if left < _MIN_FETCH_TIMEOUT:
                break
            try:
                msgs.extend(await fetch_batch(sub, want - len(msgs), left))
            except (TimeoutError, NatsError):
                break
        return msgs

    def _batch_size(self) -> int:
        batch = self._opts.batch
        return max(1, batch() if callable(batch) else batch)

    async def _report_backlog(self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event) -> None:
        """Refresh the backlog gauges from the durable's info every backlog_seconds; a failure is only logged."""
        labels = (self.durable.stream, self.durable.name)
        while True:
            try:
                info = await sub.consumer_info()
            except Exception as exc:  # a gauge is not worth stopping for; the next refresh may work
                log.warning("reading the durable's backlog failed", extra={
                    "stream": labels[0], "durable": labels[1], "error": repr(exc)})
            else:
                PENDING.labels(*labels).set(info.num_pending or 0)
                ACK_PENDING.labels(*labels).set(info.num_ack_pending or 0)
            if await stopped_within(stop, self._opts.backlog_seconds):
                return


_END_OF_REQUEST = (StatusCode.NO_MESSAGES, StatusCode.REQUEST_TIMEOUT)


async def fetch_batch(sub: JetStreamContext.PullSubscription, batch: int, timeout: float) -> list[Msg]:
    """Up to batch messages: those already in hand, else what the server has as soon as it has any (within
    timeout; [] when nothing came). One pull request as nats-py's `fetch` makes it (`no_wait` with an expiry: the
    server answers as soon as it has handed over what is there), but the messages are taken from the
    subscription's queue directly: nats-py's fetch waits for each one in a task of its own, with a timer and a
    uuid4 (~30 of the ~40 us a fetched and acked message cost). Another subscription (the unit tests' stand-ins)
    is asked through its own fetch."""
    if not isinstance(sub, JetStreamContext.PullSubscription):
        return await sub.fetch(batch, timeout=timeout)
    inner = sub._sub  # nats-py keeps the subscription and its queue private; 2.16's own fetch reads them so too
    if inner is None:
        raise ValueError("nats: invalid subscription")
    queue = inner._pending_queue
    msgs: list[Msg] = []
    while not queue.empty() and len(msgs) < batch:  # left from an earlier request; a stale status is dropped
        msg = _taken(inner, queue.get_nowait())
        if not JetStreamContext.is_status_msg(msg):
            msgs.append(msg)
    if len(msgs) >= batch:
        return msgs
    request: dict[str, object] = {"batch": batch - len(msgs), "no_wait": True}
    if not msgs:  # with an expiry the server waits for the first message; without, it answers at once
        request["expires"] = max(1, int(timeout * 1e9) - 100_000)
    await sub._nc.publish(sub._nms, json.dumps(request).encode(), sub._deliver)
    deadline = time.monotonic() + timeout
    while len(msgs) < batch:
        if queue.empty():
            try:
                msg = await asyncio.wait_for(queue.get(), deadline - time.monotonic())
            except TimeoutError:
                break
        else:
            msg = queue.get_nowait()
        status = JetStreamContext.is_status_msg(_taken(inner, msg))
        if not status:
            msgs.append(msg)
        elif status in _END_OF_REQUEST:
            break
        elif status != StatusCode.CONTROL_MESSAGE:  # e.g. 409 consumer deleted: the caller backs off
            if msgs:
                break
            raise APIError.from_msg(msg)
    return msgs


def _taken(sub: Subscription, msg: Msg) -> Msg:
    """Account for msg as nats-py's next_msg does (a draining subscription waits for every queued message)."""
    sub._pending_size -= len(msg.data)
    sub._pending_queue.task_done()
    return msg


def samples_by_worker(undecodable: Callable[[], object]) -> Callable[[Msg], tuple[str, events_pb2.MetricSample]]:
    """in_order_per_key's decode for MetricSample messages, keyed by worker id: an undecodable one is counted
    (undecodable()), logged and raised, and in_order_per_key terminates it."""
    def decode(msg: Msg) -> tuple[str, events_pb2.MetricSample]:
        try:
            sample = messages.decode(events_pb2.MetricSample, msg.data, msg.headers)
        except UndecodableMessage as exc:
            undecodable()
            log.warning("undecodable sample terminated", extra={"subject": msg.subject, "error": str(exc)})
            raise
        return sample.worker_id, sample
    return decode
