"""Durable pull consumer "registry" on CML_METRICS: each MetricSample is applied to its worker. Replicas of
the registry bind the same durable and share the samples; samples of one worker in a batch are applied in
order, different workers concurrently."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter

from cml.monitor.v1 import events_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.telemetry import extract_trace, tracer
from cmlmon_core.topology import METRICS_STREAM
from registry.errors import RegistryError
from registry.service.handlers import Registry

log = logging.getLogger(__name__)
_tracer = tracer("registry")

DURABLE = "registry"
SAMPLES = Counter("registry_samples_total", "metric samples consumed", ["outcome"])


async def consume_samples(js: JetStreamContext, registry: Registry, stop: asyncio.Event, batch: int = 256) -> None:
    """Fetch and apply samples until stop is set; in-flight samples are finished (acked) or nak'ed."""
    sub = await js.pull_subscribe(
        subjects.METRICS_ALL, durable=DURABLE, stream=METRICS_STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=20_000,
                              deliver_policy=DeliverPolicy.NEW),
    )
    log.info("consuming samples", extra={"stream": METRICS_STREAM, "durable": DURABLE})
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(batch, timeout=1)
            except TimeoutError:  # nats' own and the bare asyncio one that fetch also raises under load
                continue
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                if stop.is_set():
                    break
                log.warning("fetching samples failed", extra={"error": repr(exc)})
                await asyncio.sleep(1)
                continue
            try:
                await handle_batch(registry, msgs)
            except Exception:  # a bug in one batch must not stop monitoring: its samples are redelivered
                SAMPLES.labels("error").inc()
                log.exception("sample batch failed")
    finally:
        # a pull subscription left to the connection's drain keeps it waiting for its whole timeout
        try:
            await sub.unsubscribe()
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            log.debug("unsubscribe failed", extra={"error": repr(exc)})


async def handle_batch(registry: Registry, msgs: list[Msg]) -> None:
    per_worker: dict[str, list[tuple[Msg, events_pb2.MetricSample]]] = defaultdict(list)
    for msg in msgs:
        try:
            sample = messages.decode(events_pb2.MetricSample, msg.data, msg.headers)
        except messages.UndecodableMessage as exc:
            SAMPLES.labels("undecodable").inc()
            log.warning("undecodable sample terminated", extra={"subject": msg.subject, "error": str(exc)})
            await _quietly(msg.term())
            continue
        per_worker[sample.worker_id].append((msg, sample))
    await asyncio.gather(*(_apply_in_order(registry, items) for items in per_worker.values()))


async def _apply_in_order(registry: Registry, items: list[tuple[Msg, events_pb2.MetricSample]]) -> None:
    for msg, sample in items:
        try:
            with _tracer.start_as_current_span("registry.apply_sample", context=extract_trace(msg.headers)):
                known = await registry.apply_sample(sample)
        except RegistryError as exc:
            SAMPLES.labels("retry").inc()
            log.warning("sample not applied; redelivery later",
                        extra={"worker_id": sample.worker_id, "error": str(exc)})
            await _quietly(msg.nak(delay=2))
            continue
        SAMPLES.labels("applied" if known else "unknown_worker").inc()
        await _quietly(msg.ack())


async def _quietly(op: Awaitable[None]) -> None:
    """Ack, nak or term; when that fails (connection lost) the server redelivers after AckWait anyway, and the
    rest of the batch still gets applied."""
    try:
        await op
    except (nats.errors.Error, nats.js.errors.Error) as exc:
        log.warning("ack failed", extra={"error": repr(exc)})
