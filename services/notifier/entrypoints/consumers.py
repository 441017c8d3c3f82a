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
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cml.monitor.v1 import alert_pb2, events_pb2
from cmlmon_core import subjects
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
Handler = Callable[[Msg], Awaitable[None]]
RETRY_DELAY = 2.0
SLOT_POLL_SECONDS = 0.5  # how soon a consumer waiting for a free delivery slot notices it must stop
KEEPALIVE_SECONDS = 5.0  # well under the 30 s AckWait of the sink consumers
_tracer = tracer("notifier")


def replay_config(durable: str, replay_seconds: float, max_ack_pending: int, ack_wait: float = 30.0
                  ) -> ConsumerConfig:
    """A durable that, when first created, starts replay_seconds back (0: only new messages)."""
    config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait,
                            max_ack_pending=max_ack_pending)
    if replay_seconds > 0:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = datetime.now(UTC) - timedelta(seconds=replay_seconds)
    else:
        config.deliver_policy = DeliverPolicy.NEW
    return config


async def pull_loop(sub: JetStreamContext.PullSubscription, batch: int, handle_batch: Callable[[list[Msg]],
                    Awaitable[None]], stop: asyncio.Event) -> None:
    """Fetch and handle batches until stop is set; the batch in hand is finished first."""
    while not stop.is_set():
        try:
            msgs = await sub.fetch(batch, timeout=1.0)
        except (NatsTimeout, TimeoutError):  # nats-py raises either when a fetch finds nothing
            continue
        except Exception as exc:  # connection trouble: the client reconnects; keep asking
            log.warning("fetch failed", extra={"error": repr(exc)})
            await asyncio.sleep(1.0)
            continue
        await handle_batch(msgs)


async def settle(msg: Msg, stream: str, handle: Callable[[], Awaitable[None]]) -> None:
    """Run handle; ack on success, term on undecodable input, nak (redeliver later) on our failures. Neither a
    bug in one message's handling nor a failed ack stops the consumer: the message comes back later."""
    try:
        await handle()
    except UndecodableMessage as exc:
        metrics.UNDECODABLE.labels(stream=stream).inc()
        log.error("undecodable message terminated", extra={"subject": msg.subject, "error": str(exc)})
        await _reply(msg.term(), msg)
        return
    except NotifierError as exc:
        log.warning("handling failed; will be redelivered", extra={"subject": msg.subject, "error": repr(exc)})
        await _reply(msg.nak(delay=RETRY_DELAY), msg)
        return
    except Exception:
        log.exception("handling crashed; will be redelivered", extra={"subject": msg.subject})
        await _reply(msg.nak(delay=RETRY_DELAY), msg)
        return
    await _reply(msg.ack(), msg)


async def _reply(op: Awaitable[None], msg: Msg) -> None:
    """Ack, nak or term; when that fails (connection lost) the server redelivers after AckWait anyway."""
    try:
        await op
    except NatsError as exc:
        log.warning("acknowledgement failed", extra={"subject": msg.subject, "error": repr(exc)})


async def _keep_alive(msg: Msg) -> None:
    """Until cancelled, tell the server every KEEPALIVE_SECONDS that msg is still being worked on."""
    while True:
        await asyncio.sleep(KEEPALIVE_SECONDS)
        await _reply(msg.in_progress(), msg)


class SampleConsumer:
    """Durable "<prefix>" on CML_METRICS, shared by replicas. Samples are evaluated one after the other, in
    order: almost all of them are decided from the local state cache without any I/O, so tasks per sample
    would cost more than they could overlap."""

    _sub: JetStreamContext.PullSubscription

    def __init__(self, evaluator: Evaluator) -> None:
        self._evaluator = evaluator

    async def subscribe(self, js: JetStreamContext, durable: str, replay_seconds: float) -> None:
        self._sub = await js.pull_subscribe(subjects.METRICS_ALL, durable=durable, stream=METRICS_STREAM,
                                            config=replay_config(durable, replay_seconds, max_ack_pending=4096))

    async def run(self, stop: asyncio.Event, batch: int = 256) -> None:
        try:
            await pull_loop(self._sub, batch, self.handle_batch, stop)
        finally:
            await self._sub.unsubscribe()

    async def handle_batch(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            await settle(msg, METRICS_STREAM, lambda m=msg: self._handle(m))  # type: ignore[misc]

    async def _handle(self, msg: Msg) -> None:
        sample = decode(events_pb2.MetricSample, msg.data, msg.headers)
        if msg.headers and TRACEPARENT in msg.headers:  # continue the collector's trace into CML_ALERTS
            with _tracer.start_as_current_span("notifier.evaluate", context=extract_trace(msg.headers)):
                await self._evaluator.handle_sample(sample_from_proto(sample, time.time()))
            return
        await self._evaluator.handle_sample(sample_from_proto(sample, time.time()))


class WorkerEventConsumer:
    """Durable "<prefix>-workers" on CML_WORKERS: learns names/tags, evaluates the lifecycle rules."""

    _sub: JetStreamContext.PullSubscription

    def __init__(self, evaluator: Evaluator) -> None:
        self._evaluator = evaluator

    async def subscribe(self, js: JetStreamContext, durable: str) -> None:
        config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0,
                                deliver_policy=DeliverPolicy.ALL, max_ack_pending=1024)
        self._sub = await js.pull_subscribe(subjects.WORKERS_ALL, durable=durable, stream=WORKERS_STREAM,
                                            config=config)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await pull_loop(self._sub, 64, self.handle_batch, stop)
        finally:
            await self._sub.unsubscribe()

    async def handle_batch(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            await settle(msg, WORKERS_STREAM, lambda m=msg: self._handle(m))  # type: ignore[misc]

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
    Deliveries run concurrently (bounded); transitions of one alert are delivered in order."""

    _sub: JetStreamContext.PullSubscription

    def __init__(self, deliverer: Deliverer, publisher: AlertPublisher, concurrency: int) -> None:
        self._deliverer = deliverer
        self._publisher = publisher
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._order: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._inflight: dict[str, int] = defaultdict(int)  # per subject, so idle locks can be dropped
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    async def subscribe(self, js: JetStreamContext, durable: str) -> None:
        """Create (or bind to) the durable; do this before evaluation starts so no transition is missed."""
        config = replay_config(durable, 0, max_ack_pending=self._concurrency * 4, ack_wait=30.0)
        self._sub = await js.pull_subscribe(subjects.ALERTS_ALL, durable=durable, stream=ALERTS_STREAM,
                                            config=config)

    async def run(self, stop: asyncio.Event, grace: float = 5.0) -> None:
        self._stopping = stop
        try:
            await pull_loop(self._sub, self._concurrency, self.handle_batch, stop)
            if self._tasks:  # in-flight deliveries get the grace period, then are handed back (nak)
                await asyncio.wait(self._tasks, timeout=grace)
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            await self._sub.unsubscribe()

    async def handle_batch(self, msgs: list[Msg]) -> None:
        for i, msg in enumerate(msgs):
            if not await self._take_slot(msgs[i:]):
                for unstarted in msgs[i:]:  # stopping: hand them back now, not after AckWait
                    await _reply(unstarted.nak(), unstarted)
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
        idle = 0.0
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._slots.acquire(), SLOT_POLL_SECONDS)
                return True
            except TimeoutError:
                idle += SLOT_POLL_SECONDS
            if idle >= KEEPALIVE_SECONDS:
                idle = 0.0
                for msg in waiting:
                    await _reply(msg.in_progress(), msg)
        return False

    async def _deliver_one(self, msg: Msg, lock: asyncio.Lock) -> None:
        # Waiting behind an earlier transition of the same alert, or one slow POST, can outlast AckWait too.
        alive = asyncio.create_task(_keep_alive(msg))
        try:
            async with lock:
                await settle(msg, ALERTS_STREAM, lambda: self._deliver(msg))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nak()  # shutting down: another replica, or this one restarted, delivers it
            raise
        except Exception as exc:  # a delivery bug must not kill the consumer
            log.exception("delivery crashed", extra={"sink": self._deliverer.sink.name, "error": repr(exc)})
        finally:
            alive.cancel()
            self._slots.release()
            self._inflight[msg.subject] -= 1
            if not self._inflight[msg.subject]:
                del self._inflight[msg.subject], self._order[msg.subject]

    async def _deliver(self, msg: Msg) -> None:
        alert = decode(alert_pb2.Alert, msg.data, msg.headers)

        async def dead_letter(reason: str, attempts: int) -> None:
            await self._publisher.publish_deadletter(self._deliverer.sink.name, alert, reason, attempts)

        with _tracer.start_as_current_span(f"notifier.deliver {self._deliverer.sink.name}",
                                           context=extract_trace(msg.headers)):
            await self._deliverer.deliver(view_from_proto(alert), dead_letter)
