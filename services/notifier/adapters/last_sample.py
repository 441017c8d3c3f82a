"""When a worker last sent a sample, read from CML_METRICS itself, so every replica agrees."""

from __future__ import annotations

from typing import Protocol

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from cml.monitor.v1 import events_pb2
from cmlmon_core import subjects
from cmlmon_core.messages import UndecodableMessage, decode
from cmlmon_core.topology import METRICS_STREAM
from notifier.adapters.codec import ts_seconds
from notifier.errors import StoreUnavailable


class LastSampleSource(Protocol):
    async def last_sample_at(self, region: str, worker_id: str) -> float | None: ...


class StreamLastSample:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def last_sample_at(self, region: str, worker_id: str) -> float | None:
        try:
            raw = await self._js.get_last_msg(METRICS_STREAM, subjects.metric(region, worker_id))
        except NotFoundError:
            return None
        except NatsError as exc:
            raise StoreUnavailable(f"cannot read last sample of {worker_id}: {exc!r}") from exc
        try:
            sample = decode(events_pb2.MetricSample, raw.data or b"", raw.headers)
        except UndecodableMessage:
            return raw.time.timestamp() if raw.time else None
        return ts_seconds(sample.observe_time) or (raw.time.timestamp() if raw.time else None)
