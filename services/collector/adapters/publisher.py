"""Publishing metric samples on cml.metrics.<region>.<worker_id> (stream CML_METRICS)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import PubAck

from cml.monitor.v1 import events_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.telemetry import publishing, untraced_headers
from cmlmon_core.topology import METRICS_STREAM
from collector.errors import CollectorError


class PublishFailed(CollectorError):
    """A sample was not stored by JetStream."""


class SamplePublisher(Protocol):
    async def publish(self, samples: Sequence[tuple[events_pb2.MetricSample, str]]) -> list[PublishFailed | None]:
        """Publish each sample with its Nats-Msg-Id; per sample, in order, None once JetStream has stored it, or
        why it may not have been."""
        ...


class JetStreamSamples:
    """All of a batch's samples are sent before any acknowledgement is awaited (JetStream's asynchronous
    publish), and the acknowledgements are awaited together: one round trip per batch instead of one per sample,
    and no task or timer per sample. A sample counts as stored only once its acknowledgement came back."""

    def __init__(self, js: JetStreamContext, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def publish(self, samples: Sequence[tuple[events_pb2.MetricSample, str]]) -> list[PublishFailed | None]:
        sent: list[asyncio.Future[PubAck] | PublishFailed] = []
        shared_headers = untraced_headers()
        try:
            for sample, msg_id in samples:
                sent.append(await self._send(sample, msg_id, shared_headers))
            pending = [f for f in sent if isinstance(f, asyncio.Future)]
            if pending:
                await asyncio.wait(pending, timeout=self._timeout)
        finally:  # an ack still awaited holds one of nats-py's pending-publish permits until its future is done
            for future in sent:
                if isinstance(future, asyncio.Future):
                    future.cancel()
        return [_outcome(f, sample.worker_id) for f, (sample, _) in zip(sent, samples, strict=True)]

    async def _send(self, sample: events_pb2.MetricSample, msg_id: str, shared_headers: dict[str, str] | None
                    ) -> asyncio.Future[PubAck] | PublishFailed:
        """Send one sample; with shared_headers (tracing off) no span is made, they carry the batch's context."""
        subject = subjects.metric(sample.region, sample.worker_id)
        try:
            if shared_headers is not None:
                data, headers = messages.encode(sample, msg_id=msg_id, headers=shared_headers)
                return await self._publish(subject, data, headers)
            with publishing("collector.publish_sample", subject) as trace_headers:
                data, headers = messages.encode(sample, msg_id=msg_id, headers=trace_headers)
                return await self._publish(subject, data, headers)
        except (NatsError, TimeoutError) as exc:
            return PublishFailed(f"sample of {sample.worker_id} not sent: {exc!r}")


    async def _publish(self, subject: str, data: bytes, headers: dict[str, str]) -> asyncio.Future[PubAck]:
        # No wait_stall: it would wrap each send in a task with a timer (~80 us of CPU a sample). A send waits for
        # a permit only while 4,000 acks are awaited, each of which publish() ends within its timeout.
        return await self._js.publish_async(subject, data, headers=headers, stream=METRICS_STREAM)


def _outcome(sent: asyncio.Future[PubAck] | PublishFailed, worker_id: str) -> PublishFailed | None:
    if isinstance(sent, PublishFailed):
        return sent
    if sent.cancelled():
        return PublishFailed(f"sample of {worker_id}: no acknowledgement in time")
    if exc := sent.exception():
        return PublishFailed(f"sample of {worker_id} not stored: {exc!r}")
    return None
