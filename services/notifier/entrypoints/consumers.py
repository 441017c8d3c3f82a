"""NATS consumers: samples and lifecycle events into the evaluator, alert transitions into each sink."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cml.monitor.v1 import alert_pb2, events_pb2
from cmlmon_core import subjects
from cmlmon_core.consuming import (
    ACK,
    TERM,
    Durable,
    Hurry,
    PullConsumer,
    PullOptions,
    Verdict,
    each,
    judge,
    kept_alive,
    retry,
    settle,
)
from cmlmon_core.messages import TRACEPARENT, UndecodableMessage, decode
from cmlmon_core.telemetry import consumer_span, extract_trace, tracer
from cmlmon_core.topology import ALERTS_STREAM, METRICS_STREAM, WORKERS_STREAM
from notifier import metrics
from notifier.adapters.codec import sample_from_proto, ts_seconds, view_from_proto, worker_from_proto
from notifier.adapters.publisher import AlertPublisher
from notifier.errors import NotifierError
from notifier.service.delivery import Deliverer
from notifier.service.evaluator import Directory, Evaluator

log = logging.getLogger(__name__)
RETRY_DELAY = 2.0
SLOT_POLL_SECONDS = 0.5  # how soon a consumer waiting for a free delivery slot notices it must stop
KEEPALIVE_SECONDS = 5.0  # well under the 30 s AckWait of the sink consumers
# A batch of samples is evaluated without waiting for I/O (256 of them hold the loop ~15 ms); every this many
# seconds it lets the deliveries (and the fetch that brings them) run, so a transition is not held behind the
# rest of the batch. Each yield costs a turn of the loop: every 1 ms about 1 % of the CPU, every 0.5 ms 2-4 %.
SAMPLE_YIELD_SECONDS = 0.001
# From a transition evaluated or fetched for a sink, the sample consumer yields after every sample for this long:
# the delivery's every step (fetch answered, task started, POST written, response read) then waits for one
# sample (~15-60 us), not a 1 ms slice. Transitions are rare, so the extra turns of the loop cost nothing to speak of.
DELIVERY_HURRY_SECONDS = 0.02
_tracer = tracer("notifier")


def replay_config(replay_seconds: float, max_ack_pending: int, ack_wait: float = 30.0) -> ConsumerConfig:
    """A durable that, when first created, starts replay_seconds back (0: only new messages)."""
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait, max_ack_pending=max_ack_pending)
    if replay_seconds > 0:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = datetime.now(UTC) - timedelta(seconds=replay_seconds)
    else:
        config.deliver_policy = DeliverPolicy.NEW
    return config


async def outcome(msg: Msg, stream: str, handle: Callable[[], Awaitable[None]]) -> Verdict:
    """Run handle: ack on success, term on undecodable input, retry later on our failures (a crash is the
    shared consumer's to log and retry: see `judge`)."""
    try:
        await handle()
    except (UndecodableMessage, NotifierError) as exc:
        return failed(msg, stream, exc)
    return ACK


def failed(msg: Msg, stream: str, exc: UndecodableMessage | NotifierError) -> Verdict:
    """The verdict on a message whose handling raised exc: never again when it is undecodable, later otherwise."""
    if isinstance(exc, UndecodableMessage):
        metrics.UNDECODABLE.labels(stream=stream).inc()
        log.error("undecodable message terminated", extra={"subject": msg.subject, "error": str(exc)})
        return TERM
    log.warning("handling failed; will be redelivered", extra={"subject": msg.subject, "error": repr(exc)})
    return retry(RETRY_DELAY)


class SampleConsumer:
    """Durable "<prefix>" on CML_METRICS, shared by replicas. Samples are evaluated one after the other, in
    order: almost all of them are decided from the local state cache without any I/O, so tasks per sample
    would cost more than they could overlap."""

    _consumer: PullConsumer

    def __init__(self, evaluator: Evaluator, hurry: Hurry | None = None) -> None:
        self._evaluator = evaluator
        self._hurry = hurry or Hurry(DELIVERY_HURRY_SECONDS)
        self._evaluated = 0  # since the last batch ended: the counter is bumped once a batch, not per sample
        self._each = each(self.handle, RETRY_DELAY, yield_every=SAMPLE_YIELD_SECONDS, hurry=self._hurry)

    async def subscribe(self, js: JetStreamContext, durable: str, replay_seconds: float, batch: int = 256) -> None:
        self._consumer = PullConsumer(js, Durable(
            stream=METRICS_STREAM, name=durable, filter_subject=subjects.METRICS_ALL,
            config=replay_config(replay_seconds, max_ack_pending=4096)), PullOptions(batch=batch))
        await self._consumer.subscribe()

    async def run(self, stop: asyncio.Event) -> None:
        await self._consumer.run(self.handle_batch, stop)

    async def handle_batch(self, msgs: list[Msg]) -> None:
        try:
            await self._each(msgs)
        finally:
            metrics.SAMPLES.inc(self._evaluated)
            self._evaluated = 0

    async def handle(self, msg: Msg) -> Verdict:
        """What `outcome` would say, without its wrappers: this runs for every sample."""
        try:
            sample = sample_from_proto(decode(events_pb2.MetricSample, msg.data, msg.headers), time.time())
            self._evaluated += 1
            if msg.headers and TRACEPARENT in msg.headers:  # continue the collector's trace into CML_ALERTS
                with _tracer.start_as_current_span("notifier.evaluate", context=extract_trace(msg.headers)):
                    transitions = await self._evaluator.handle_sample(sample)
            else:
                transitions = await self._evaluator.handle_sample(sample)
            if transitions:  # on their way to the sinks: let each step of their delivery run as soon as it can
                self._hurry.start()
        except (UndecodableMessage, NotifierError) as exc:
            return failed(msg, METRICS_STREAM, exc)
        return ACK


class WorkerEventConsumer:
    """Durable "<prefix>-workers" on CML_WORKERS: learns names/tags, evaluates the lifecycle rules."""

    _consumer: PullConsumer

    def __init__(self, evaluator: Evaluator) -> None:
        self._evaluator = evaluator

    async def subscribe(self, js: JetStreamContext, durable: str) -> None:
        self._consumer = PullConsumer(js, Durable(
            stream=WORKERS_STREAM, name=durable, filter_subject=subjects.WORKERS_ALL,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0, deliver_policy=DeliverPolicy.ALL,
                                  max_ack_pending=1024)), PullOptions(batch=64))
        await self._consumer.subscribe()

    async def run(self, stop: asyncio.Event) -> None:
        await self._consumer.run(each(self.handle, RETRY_DELAY), stop)

    async def handle(self, msg: Msg) -> Verdict:
        return await outcome(msg, WORKERS_STREAM, lambda: self._handle(msg))

    async def _handle(self, msg: Msg) -> None:
        event = decode(events_pb2.WorkerEvent, msg.data, msg.headers)
        if not event.worker.id:
            raise UndecodableMessage("worker event without a worker")
        at = ts_seconds(event.occur_time) or time.time()
        with consumer_span("notifier.evaluate_worker_event", msg.headers):
            await self._evaluator.handle_worker_event(worker_from_proto(event.worker),
                                                      event.previous_status, event.requested, at,
                                                      msg.metadata.sequence.stream)


class DirectoryFeed:
    """An ordered (ephemeral) consumer of CML_WORKERS per replica, last event per subject first: the
    directory of names, tags and statuses is complete in every replica and after every restart, while the
    shared durable above evaluates each event once."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory
        self.caught_up = asyncio.Event()
        self._sub: JetStreamContext.PushSubscription | None = None

    async def start(self, js: JetStreamContext, timeout: float = 10.0) -> None:
        info = await js.stream_info(WORKERS_STREAM)
        if not info.state.messages:
            self.caught_up.set()
        self._sub = await js.subscribe(subjects.WORKERS_ALL, stream=WORKERS_STREAM, ordered_consumer=True,
                                       deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, cb=self._on_msg)
        try:
            await asyncio.wait_for(self.caught_up.wait(), timeout)
        except TimeoutError:
            log.warning("worker directory still replaying; continuing", extra={"timeout": timeout})

    async def _on_msg(self, msg: Msg) -> None:
        try:
            event = decode(events_pb2.WorkerEvent, msg.data, msg.headers)
        except UndecodableMessage:
            return
        meta = msg.metadata
        if event.worker.id:
            self._directory.learn(worker_from_proto(event.worker), ts_seconds(event.occur_time) or time.time(),
                                  meta.sequence.stream)
        if meta.num_pending == 0:
            self.caught_up.set()

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


class SinkConsumer:
    """Durable "<prefix>-sink-<name>" on CML_ALERTS: one per sink, so a slow sink delays only itself.
    Deliveries run concurrently (bounded); transitions of one alert are delivered in order. Fetching a batch
    starts `hurry` (shared with the sample consumer), so evaluation makes way for these deliveries."""

    _consumer: PullConsumer

    def __init__(self, deliverer: Deliverer, publisher: AlertPublisher, concurrency: int,
                 hurry: Hurry | None = None) -> None:
        self._deliverer = deliverer
        self._publisher = publisher
        self._hurry = hurry or Hurry(DELIVERY_HURRY_SECONDS)
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._order: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._inflight: dict[str, int] = defaultdict(int)  # per subject, so idle locks can be dropped
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    async def subscribe(self, js: JetStreamContext, durable: str) -> None:
        """Create (or bind to) the durable; do this before evaluation starts so no transition is missed."""
        self._consumer = PullConsumer(js, Durable(
            stream=ALERTS_STREAM, name=durable, filter_subject=subjects.ALERTS_ALL,
            config=replay_config(0, max_ack_pending=self._concurrency * 4, ack_wait=30.0)),
            PullOptions(batch=self._concurrency))
        await self._consumer.subscribe()

    async def run(self, stop: asyncio.Event, grace: float = 5.0) -> None:
        self._stopping = stop
        await self._consumer.run(self.handle_batch, stop)
        if self._tasks:  # in-flight deliveries get the grace period, then are handed back (nak)
            await asyncio.wait(self._tasks, timeout=grace)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def handle_batch(self, msgs: list[Msg]) -> None:
        self._hurry.start()
        for i, msg in enumerate(msgs):
            if not await self._take_slot(msgs[i:]):
                for unstarted in msgs[i:]:  # stopping: hand them back now, not after AckWait
                    await settle(unstarted, retry())
                return
            lock = self._order[msg.subject]
            self._inflight[msg.subject] += 1
            task = asyncio.create_task(self._deliver_one(msg, lock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _take_slot(self, waiting: list[Msg]) -> bool:
        """Wait for a free delivery slot; False when the consumer stops first. Behind a slow sink this can take
        longer than AckWait: the fetched messages are reported in progress meanwhile, or the server would hand
        them out again and each would be delivered twice."""
        if not self._slots.locked():
            await self._slots.acquire()
            return True
        async with kept_alive(waiting, KEEPALIVE_SECONDS):
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slots.acquire(), SLOT_POLL_SECONDS)
                    return True
        return False

    async def _deliver_one(self, msg: Msg, lock: asyncio.Lock) -> None:
        # Waiting behind an earlier transition of the same alert, or one slow POST, can outlast AckWait too.
        try:
            async with kept_alive([msg], KEEPALIVE_SECONDS), lock:
                await settle(msg, await judge(self._judge_delivery, msg, RETRY_DELAY))
        except asyncio.CancelledError:
            await settle(msg, retry())  # shutting down: another replica, or this one restarted, delivers it
            raise
        except Exception as exc:  # a delivery bug must not kill the consumer
            log.exception("delivery crashed", extra={"sink": self._deliverer.sink.name, "error": repr(exc)})
        finally:
            self._slots.release()
            self._inflight[msg.subject] -= 1
            if not self._inflight[msg.subject]:
                del self._inflight[msg.subject], self._order[msg.subject]

    async def _judge_delivery(self, msg: Msg) -> Verdict:
        return await outcome(msg, ALERTS_STREAM, lambda: self._deliver(msg))

    async def _deliver(self, msg: Msg) -> None:
        alert = decode(alert_pb2.Alert, msg.data, msg.headers)

        async def dead_letter(reason: str, attempts: int) -> None:
            await self._publisher.publish_deadletter(self._deliverer.sink.name, alert, reason, attempts)

        with _tracer.start_as_current_span(f"notifier.deliver {self._deliverer.sink.name}",
                                           context=extract_trace(msg.headers)):
            await self._deliverer.deliver(view_from_proto(alert), dead_letter)
