"""Metric history: one worker's samples read from CML_METRICS through a short-lived consumer filtered on that
worker's subject (cml.metrics.<region>.<worker_id>), so no other worker's sample is ever read."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cml.monitor.v1 import events_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.topology import METRICS_STREAM
from registry.errors import Unavailable

log = logging.getLogger(__name__)
_STATUS = "Status"  # header of JetStream's status messages


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
    """MetricHistory on CML_METRICS: per read, an ephemeral consumer (no acks, in memory) filtered on the worker's
    subject, deleted after. Its messages are pulled in batches of the known pending count (no_wait) onto an inbox
    whose callback collects them: several times faster than nats-py's fetch(), which waits on each message."""

    def __init__(self, nc: Client, *, stream: str = METRICS_STREAM, batch: int = 2000, timeout: float = 10.0
                 ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._stream = stream
        self._batch = batch
        self._timeout = timeout

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
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable(f"reading the history of {worker_id}: {exc!r}") from exc
        pending = info.num_pending or 0
        try:
            while pending > 0:
                msgs = await self._pull(info.name, min(pending, self._batch), worker_id)
                if not msgs:
                    return
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
                await self._js.delete_consumer(self._stream, info.name)

    async def _pull(self, consumer: str, count: int, worker_id: str) -> list[Msg]:
        """Up to count messages of the consumer, as many as it has now (a status message ends a short batch)."""
        got: list[Msg] = []
        done = asyncio.Event()

        async def on_msg(msg: Msg) -> None:
            if msg.headers and _STATUS in msg.headers:  # 404 no messages / 408: fewer than asked for
                done.set()
                return
            got.append(msg)
            if len(got) >= count:
                done.set()

        inbox = self._nc.new_inbox()
        try:
            sub = await self._nc.subscribe(inbox, cb=on_msg, pending_msgs_limit=count + 16)
            try:
                await self._nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{consumer}",
                                       json.dumps({"batch": count, "no_wait": True}).encode(), reply=inbox)
                await asyncio.wait_for(done.wait(), self._timeout)
            finally:
                await sub.unsubscribe()
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable(f"reading the history of {worker_id}: {exc!r}") from exc
        return got
