"""Lifecycle events onto CML_WORKERS, each with Nats-Msg-Id = event_id so that a re-publish is dropped by the
server's duplicate window; beyond that window the last message of the subject is compared before publishing."""

from __future__ import annotations

import logging
from typing import Protocol

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from prometheus_client import Counter

from cml.monitor.v1 import events_pb2
from cmlmon_core import messages, subjects, telemetry
from cmlmon_core.topology import WORKERS_STREAM
from registry.domain.model import EVENT_SUFFIX
from registry.errors import Unavailable

log = logging.getLogger(__name__)

EVENTS = Counter("registry_events_published_total", "lifecycle events published", ["event", "outcome"])


def event_subject(event: events_pb2.WorkerEvent) -> str:
    return subjects.worker_event(event.worker.id, EVENT_SUFFIX[event.type])


class EventPublisher(Protocol):
    async def publish(self, event: events_pb2.WorkerEvent, *, check_stream: bool = False) -> None: ...


class JetStreamEventPublisher:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def publish(self, event: events_pb2.WorkerEvent, *, check_stream: bool = False) -> None:
        """Publish once. check_stream: first look whether the subject's last message is this very event
        (a re-publish of an event saved long ago, possibly outside the duplicate window)."""
        subject = event_subject(event)
        with telemetry.publishing("registry.publish_event", subject) as trace_headers:
            try:
                if check_stream and await self._last_event_id(subject) == event.event_id:
                    EVENTS.labels(EVENT_SUFFIX[event.type], "already_in_stream").inc()
                    return
                data, headers = messages.encode(event, msg_id=event.event_id, headers=trace_headers)
                ack = await self._js.publish(subject, data, headers=headers, stream=WORKERS_STREAM)
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                raise Unavailable(f"publishing {subject}: {exc!r}") from exc
            EVENTS.labels(EVENT_SUFFIX[event.type], "duplicate" if ack.duplicate else "published").inc()
            log.info("event published", extra={"subject": subject, "event_id": event.event_id,
                                                "duplicate": bool(ack.duplicate)})

    async def _last_event_id(self, subject: str) -> str:
        try:
            msg = await self._js.get_last_msg(WORKERS_STREAM, subject)
        except nats.js.errors.NotFoundError:
            return ""
        try:
            return messages.decode(events_pb2.WorkerEvent, msg.data or b"", msg.headers).event_id
        except messages.UndecodableMessage:
            return ""
