"""Durable pull consumer "autopilot" on CML_METRICS, shared by every autopilot replica: each sample goes to
one replica; samples of one worker in a batch are handled in order, different workers concurrently (the
per-worker compare-and-set state makes concurrent samples of one worker on two replicas safe as well)."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter

from autopilot.errors import AutopilotError
from autopilot.service.pilot import Pilot
from cml.monitor.v1 import events_pb2
from cmlmon_core import subjects
from cmlmon_core.consuming import (
    ACK,
    Durable,
    PullConsumer,
    PullOptions,
    Verdict,
    in_order_per_key,
    retry,
    samples_by_worker,
)
from cmlmon_core.topology import METRICS_STREAM

log = logging.getLogger(__name__)

RETRY_DELAY = 5.0
SAMPLES = Counter("autopilot_samples_total", "metric samples handled", ["outcome"])


def samples_durable(name: str, ack_wait: float) -> Durable:
    return Durable(stream=METRICS_STREAM, name=name, filter_subject=subjects.METRICS_ALL,
                   config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait, max_ack_pending=10_000,
                                         deliver_policy=DeliverPolicy.NEW))


class SampleConsumer:
    def __init__(self, js: JetStreamContext, pilot: Pilot, durable: Durable) -> None:
        self._pilot = pilot
        self.consumer = PullConsumer(js, durable, PullOptions(batch=64))

    async def run(self, stop: asyncio.Event) -> None:
        await self.consumer.run(self.handle_batch, stop)

    async def handle_batch(self, msgs: list[Msg]) -> None:
        await in_order_per_key(samples_by_worker(SAMPLES.labels("undecodable").inc), self._handle)(msgs)

    async def _handle(self, msg: Msg, sample: events_pb2.MetricSample) -> Verdict:
        try:
            await self._pilot.handle_sample(sample)
        except AutopilotError as exc:
            SAMPLES.labels("retry").inc()
            log.warning("sample not handled; redelivery later",
                        extra={"worker_id": sample.worker_id, "error": str(exc)})
            return retry(RETRY_DELAY)
        SAMPLES.labels("handled").inc()
        return ACK

