"""Metric history: one worker's samples read from CML_METRICS through a short-lived consumer filtered on that
worker's subject (cml.metrics.<region>.<worker_id>), so no other worker's sample is ever read."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cml.monitor.v1 import events_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.topology import METRICS_STREAM
from registry.errors import Unavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredSample:
    sequence: int  # stream sequence: where a next page starts
    stored_ns: int  # when the stream stored it (unix ns)
    sample: events_pb2.MetricSample


@dataclass(frozen=True, slots=True)
class ReadFrom:
    """Where a read starts: a stream sequence (a next page), else the first sample stored at or after a time."""

    sequence: int = 0
    time: datetime | None = None


class MetricHistory(Protocol):
    def read(self, region: str, worker_id: str, start: ReadFrom) -> AsyncGenerator[StoredSample, None]: ...


class JetStreamMetricHistory:
    """MetricHistory on CML_METRICS: an ephemeral pull consumer (no acks, in memory) per read, deleted after."""

    def __init__(self, js: JetStreamContext, *, stream: str = METRICS_STREAM, batch: int = 1000) -> None:
        self._js = js
        self._stream = stream
        self._batch = batch

    async def read(self, region: str, worker_id: str, start: ReadFrom) -> AsyncGenerator[StoredSample, None]:
        """The worker's samples in stream order from start, until none is left (the caller may stop early)."""
        subject = subjects.metric(region, worker_id)
        config = ConsumerConfig(filter_subject=subject, ack_policy=AckPolicy.NONE, mem_storage=True,
                                inactive_threshold=30.0, num_replicas=1)
        if start.sequence:
            config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, start.sequence
        else:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = start.time or datetime.fromtimestamp(0, UTC)
        try:
            info = await self._js.add_consumer(self._stream, config)
            name = info.name
            pending = info.num_pending or 0
            sub = await self._js.pull_subscribe_bind(consumer=name, stream=self._stream)
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable(f"reading the history of {worker_id}: {exc!r}") from exc
        try:
            while pending > 0:
                try:
                    msgs = await sub.fetch(min(pending, self._batch), timeout=5)
                except (nats.errors.Error, nats.js.errors.Error) as exc:
                    raise Unavailable(f"reading the history of {worker_id}: {exc!r}") from exc
                for msg in msgs:
                    meta = msg.metadata
                    pending = meta.num_pending
                    try:
                        sample = messages.decode(events_pb2.MetricSample, msg.data, msg.headers)
                    except messages.UndecodableMessage:
                        log.warning("undecodable sample skipped", extra={"subject": subject,
                                                                          "sequence": meta.sequence.stream})
                        continue
                    yield StoredSample(meta.sequence.stream, int(meta.timestamp.timestamp() * 1e9), sample)
        finally:
            with contextlib.suppress(Exception):  # else the server drops it after inactive_threshold
                await sub.unsubscribe()
                await self._js.delete_consumer(self._stream, name)
