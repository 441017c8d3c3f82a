"""Durable consumer "collector" on CML_WORKERS, shared by every replica: lifecycle events keep the schedules.

At most one event is in flight across all replicas (max_ack_pending=1), so the events of one worker are
applied in order even when replicas take turns (a `terminated` is never overtaken by its `created`). A
first start replays the stream, which schedules every active worker of an existing fleet."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cml.monitor.v1 import events_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.consuming import ACK_CONFIRMED, TERM, Durable, PullConsumer, PullOptions, Verdict, each, retry
from cmlmon_core.topology import WORKERS_STREAM
from collector import telemetry
from collector.errors import CollectorError
from collector.service.schedules import ScheduleKeeper

log = logging.getLogger(__name__)

DURABLE = "collector"


def worker_events_durable(ack_wait: float = 10.0) -> Durable:
    return Durable(stream=WORKERS_STREAM, name=DURABLE, filter_subject=subjects.WORKERS_ALL, update_config=True,
                   config=ConsumerConfig(description="collector: worker events keep the poll schedules",
                                         deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT,
                                         ack_wait=ack_wait, max_ack_pending=1))


class WorkerEventConsumer:
    def __init__(self, js: JetStreamContext, keeper: ScheduleKeeper, retry_delay: float = 2.0) -> None:
        self._keeper = keeper
        self._retry_delay = retry_delay
        self._consumer = PullConsumer(js, worker_events_durable(), PullOptions(batch=1, retry_seconds=retry_delay))
        self.consuming = self._consumer.consuming  # the readiness probe reads it

    async def run(self, stop: asyncio.Event) -> None:
        await self._consumer.run(each(self.handle, self._retry_delay), stop)

    async def handle(self, msg: Msg) -> Verdict:
        try:
            event = messages.decode(events_pb2.WorkerEvent, msg.data, msg.headers)
        except messages.UndecodableMessage as exc:
            telemetry.WORKER_EVENTS.labels("undecodable").inc()
            log.error("undecodable worker event terminated", extra={"subject": msg.subject, "error": str(exc)})
            return TERM
        try:
            change = await self._keeper.apply_event(event)
        except ValueError as exc:  # a worker id or region that cannot be a subject token: retrying won't help
            telemetry.WORKER_EVENTS.labels("invalid").inc()
            log.error("worker event refused", extra={"subject": msg.subject, "error": str(exc)})
            return TERM
        except CollectorError as exc:
            telemetry.WORKER_EVENTS.labels("failed").inc()
            log.warning("worker event not applied; retrying", extra={"subject": msg.subject, "error": str(exc)})
            return retry(self._retry_delay)
        telemetry.WORKER_EVENTS.labels(change).inc()
        return ACK_CONFIRMED  # with one event in flight, the next fetch waits on this ack reaching the server
