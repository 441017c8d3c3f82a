"""Durable consumer "collector" on CML_WORKERS, shared by every replica: lifecycle events keep the schedules.

At most one event is in flight across all replicas (max_ack_pending=1), so the events of one worker are
applied in order even when replicas take turns (a `terminated` is never overtaken by its `created`). A
first start replays the stream, which schedules every active worker of an existing fleet."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cml.monitor.v1 import events_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.telemetry import consumer_span
from cmlmon_core.topology import WORKERS_STREAM
from collector import telemetry
from collector.entrypoints.stopping import stopped_within
from collector.errors import CollectorError
from collector.service.schedules import ScheduleKeeper

log = logging.getLogger(__name__)

DURABLE = "collector"


def consumer_config(ack_wait: float = 10.0) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=DURABLE, description="collector: worker events keep the poll schedules",
        filter_subject=subjects.WORKERS_ALL, deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait, max_ack_pending=1,
    )


class WorkerEventConsumer:
    def __init__(self, js: JetStreamContext, keeper: ScheduleKeeper, retry_delay: float = 2.0) -> None:
        self._js = js
        self._keeper = keeper
        self._retry_delay = retry_delay
        self.consuming = asyncio.Event()  # set while bound to the durable: the readiness probe reads it

    async def run(self, stop: asyncio.Event) -> None:
        await self._js.add_consumer(WORKERS_STREAM, consumer_config())
        psub = await self._js.pull_subscribe_bind(durable=DURABLE, stream=WORKERS_STREAM)
        log.info("consuming worker events", extra={"durable": DURABLE})
        self.consuming.set()
        while not stop.is_set():
            try:
                msgs = await psub.fetch(batch=1, timeout=1.0)
            except TimeoutError:
                continue
            except NatsError as exc:
                log.warning("fetching worker events failed", extra={"error": repr(exc)})
                await stopped_within(stop, self._retry_delay)
                continue
            for msg in msgs:
                try:
                    await self.handle(msg)
                except (NatsError, TimeoutError) as exc:  # the ack was lost: the event comes again, harmlessly
                    log.warning("acknowledging a worker event failed", extra={"error": repr(exc)})
        self.consuming.clear()
        await psub.unsubscribe()

    async def handle(self, msg: Msg) -> None:
        try:
            event = messages.decode(events_pb2.WorkerEvent, msg.data, msg.headers)
        except messages.UndecodableMessage as exc:
            telemetry.WORKER_EVENTS.labels("undecodable").inc()
            log.error("undecodable worker event terminated", extra={"subject": msg.subject, "error": str(exc)})
            await msg.term()
            return
        try:
            with consumer_span("collector.apply_worker_event", msg.headers):
                change = await self._keeper.apply_event(event)
        except ValueError as exc:  # a worker id or region that cannot be a subject token: retrying won't help
            telemetry.WORKER_EVENTS.labels("invalid").inc()
            log.error("worker event refused", extra={"subject": msg.subject, "error": str(exc)})
            await msg.term()
            return
        except CollectorError as exc:
            telemetry.WORKER_EVENTS.labels("failed").inc()
            log.warning("worker event not applied; retrying", extra={"subject": msg.subject, "error": str(exc)})
            await msg.nak(delay=self._retry_delay)
            return
        telemetry.WORKER_EVENTS.labels(change).inc()
        await msg.ack_sync()
