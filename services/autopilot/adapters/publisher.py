"""Every decision on NATS twice: an AutopilotDecision on cml.autopilot.<worker_id>.<action> (CML_AUTOPILOT),
and an Alert on cml.alerts.<worker_id>.<rule> (CML_ALERTS), which the notifier's sinks deliver to people like
any other alert (rule `idle` for idleness, resolved when the worker is busy again; `autostop` for the rest;
`cml_unhealthy` and `cml_licence_noncompliant` about the controller). Both carry the decision id as Nats-Msg-Id,
so a retried publish is deduplicated."""

from __future__ import annotations

from typing import Protocol

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from autopilot.errors import PublishFailed
from cml.monitor.v1 import alert_pb2, events_pb2
from cmlmon_core import subjects
from cmlmon_core.messages import encode

IDLE_RULE = "idle"
AUTOSTOP_RULE = "autostop"


class DecisionPublisher(Protocol):
    async def publish(self, decision: events_pb2.AutopilotDecision, alert: alert_pb2.Alert) -> None: ...
    async def publish_alert(self, alert: alert_pb2.Alert) -> None: ...


class JetStreamDecisionPublisher:
    def __init__(self, js: JetStreamContext, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def publish(self, decision: events_pb2.AutopilotDecision, alert: alert_pb2.Alert) -> None:
        try:
            data, headers = encode(decision, msg_id=decision.decision_id)
            await self._js.publish(subjects.autopilot(decision.worker_id, decision.action), data, headers=headers,
                                   timeout=self._timeout)
        except NatsError as exc:
            raise PublishFailed(f"decision {decision.decision_id}: {exc!r}") from exc
        await self.publish_alert(alert)

    async def publish_alert(self, alert: alert_pb2.Alert) -> None:
        try:
            data, headers = encode(alert, msg_id=alert.transition_id)
            await self._js.publish(subjects.alert(alert.worker_id, alert.rule), data, headers=headers,
                                   timeout=self._timeout)
        except NatsError as exc:
            raise PublishFailed(f"alert {alert.transition_id}: {exc!r}") from exc
