"""Durable pull consumer "registry" on CML_METRICS: each MetricSample is applied to its worker. Replicas of
the registry bind the same durable and share the samples; samples of one worker in a batch are applied in
order, different workers concurrently."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter

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
from cmlmon_core.telemetry import extract_trace, tracer
from cmlmon_core.topology import METRICS_STREAM
from registry.errors import RegistryError
from registry.service.handlers import Registry

log = logging.getLogger(__name__)
_tracer = tracer("registry")

DURABLE = "registry"
RETRY_DELAY = 2.0
SAMPLES = Counter("registry_samples_total", "metric samples consumed", ["outcome"])

SAMPLES_DURABLE = Durable(
    stream=METRICS_STREAM, name=DURABLE, filter_subject=subjects.METRICS_ALL,
    config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=20_000,
                          deliver_policy=DeliverPolicy.NEW))


async def consume_samples(js: JetStreamContext, registry: Registry, stop: asyncio.Event, batch: int = 256) -> None:
    """Fetch and apply samples until stop is set; in-flight samples are finished (acked) or nak'ed."""
    async def handle(msgs: list[Msg]) -> None:
        try:
            await handle_batch(registry, msgs)
        except Exception:  # counted here; the consumer logs it and the batch's samples are redelivered
            SAMPLES.labels("error").inc()
            raise

    await PullConsumer(js, SAMPLES_DURABLE, PullOptions(batch=batch)).run(handle, stop)


async def handle_batch(registry: Registry, msgs: list[Msg]) -> None:
    async def apply(msg: Msg, sample: events_pb2.MetricSample) -> Verdict:
        try:
            with _tracer.start_as_current_span("registry.apply_sample", context=extract_trace(msg.headers)):
                known = await registry.apply_sample(sample)
        except RegistryError as exc:
            SAMPLES.labels("retry").inc()
            log.warning("sample not applied; redelivery later",
                        extra={"worker_id": sample.worker_id, "error": str(exc)})
            return retry(RETRY_DELAY)
        SAMPLES.labels("applied" if known else "unknown_worker").inc()
        return ACK

    await in_order_per_key(samples_by_worker(SAMPLES.labels("undecodable").inc), apply)(msgs)

