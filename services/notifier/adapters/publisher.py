"""Publishing alert transitions (CML_ALERTS) and dead letters (CML_DEADLETTER)."""

from __future__ import annotations

from typing import Protocol

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from cml.monitor.v1 import alert_pb2
from cmlmon_core import subjects
from cmlmon_core.messages import encode
from cmlmon_core.telemetry import inject_trace, publishing
from notifier.errors import PublishFailed

DEADLETTER_REASON = "Cml-Deadletter-Reason"
DEADLETTER_SINK = "Cml-Deadletter-Sink"
DEADLETTER_ATTEMPTS = "Cml-Deadletter-Attempts"


class AlertPublisher(Protocol):
    async def publish_alert(self, alert: alert_pb2.Alert) -> None: ...
    async def publish_deadletter(self, sink: str, alert: alert_pb2.Alert, reason: str, attempts: int) -> None: ...


class JetStreamAlertPublisher:
    def __init__(self, js: JetStreamContext, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def publish_alert(self, alert: alert_pb2.Alert) -> None:
        subject = subjects.alert(alert.worker_id, alert.rule)
        try:
            with publishing("notifier.publish_alert", subject) as trace_headers:
                data, headers = encode(alert, msg_id=alert.transition_id, headers=trace_headers)
                await self._js.publish(subject, data, headers=headers, timeout=self._timeout)
        except NatsError as exc:
            raise PublishFailed(f"alert {alert.transition_id}: {exc!r}") from exc

    async def publish_deadletter(self, sink: str, alert: alert_pb2.Alert, reason: str, attempts: int) -> None:
        extra = {DEADLETTER_REASON: reason[:500], DEADLETTER_SINK: sink, DEADLETTER_ATTEMPTS: str(attempts)}
        data, headers = encode(alert, msg_id=f"{sink}.{alert.transition_id}", headers=inject_trace(extra))
        try:
            await self._js.publish(subjects.deadletter(sink, alert.worker_id, alert.rule), data, headers=headers,
                                   timeout=self._timeout)
        except NatsError as exc:
            raise PublishFailed(f"dead letter {alert.transition_id}: {exc!r}") from exc
