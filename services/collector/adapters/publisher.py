"""Publishing metric samples on cml.metrics.<region>.<worker_id> (stream CML_METRICS)."""

from __future__ import annotations

from typing import Protocol

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from cml.monitor.v1 import events_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.telemetry import publishing
from cmlmon_core.topology import METRICS_STREAM
from collector.errors import CollectorError


class PublishFailed(CollectorError):
    """A sample was not stored by JetStream."""


class SamplePublisher(Protocol):
    async def publish(self, sample: events_pb2.MetricSample, msg_id: str) -> None: ...


class JetStreamSamples:
    def __init__(self, js: JetStreamContext, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def publish(self, sample: events_pb2.MetricSample, msg_id: str) -> None:
        subject = subjects.metric(sample.region, sample.worker_id)
        try:
            with publishing("collector.publish_sample", subject) as trace_headers:
                data, headers = messages.encode(sample, msg_id=msg_id, headers=trace_headers)
                await self._js.publish(subject, data, headers=headers, stream=METRICS_STREAM, timeout=self._timeout)
        except (NatsError, TimeoutError) as exc:
            raise PublishFailed(f"sample of {sample.worker_id} not stored: {exc!r}") from exc
