"""Remediation's use-case, the autopilot's second policy beside auto-stop: on the same samples, under the same
compare-and-set on the worker's state (the Pilot's), the pure decision (domain.remediation) is claimed, then
done through the registry under the autopilot's identity (RebootWorker, or StopWorker and, once stopped,
StartWorker), and every decision announced like auto-stop's: an AutopilotDecision on
cml.autopilot.<worker_id>.<action> and an Alert of rule `remediation` (critical when escalated, resolved when
the worker recovers)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from autopilot import metrics
from autopilot.adapters.publisher import DecisionPublisher
from autopilot.adapters.registry import RegistryPort
from autopilot.domain.autostop import Decision, PilotState
from autopilot.domain.remediation import (
    Check,
    CheckObservation,
    Power,
    RemediationPolicy,
    RemediationState,
    RemedyAction,
    RemedyDecision,
    failed,
    remediate,
    start_refused,
)
from autopilot.errors import RegistryCallFailed
from cml.monitor.v1 import alert_pb2, events_pb2, worker_pb2

log = logging.getLogger(__name__)

REMEDIATION_RULE = "remediation"
# The action each decision is announced as (the subject's last token), once its call, if any, was accepted.
_ANNOUNCED = {"reboot": "rebooted", "stop": "stop_start_stopping", "start": "stop_start_starting",
              "ended": "remediation_ended"}
_SEVERITY = {"rebooted": alert_pb2.ALERT_SEVERITY_WARNING, "stop_start_stopping": alert_pb2.ALERT_SEVERITY_WARNING,
             "stop_start_starting": alert_pb2.ALERT_SEVERITY_WARNING, "escalated": alert_pb2.ALERT_SEVERITY_CRITICAL}
_RESOLVING = ("recovered", "remediation_ended")
_CHECKS: dict[int, Check] = {worker_pb2.STATUS_CHECK_OK: "ok", worker_pb2.STATUS_CHECK_IMPAIRED: "impaired"}
# A worker recorded before the registry kept its root device type is not known to be EBS-backed (None): a failed
# system check is then escalated, never answered by a stop that would lose an instance store's disks.
_EBS_BACKED = {worker_pb2.ROOT_DEVICE_TYPE_EBS: True, worker_pb2.ROOT_DEVICE_TYPE_INSTANCE_STORE: False}
_POWER: dict[int, Power] = {
    worker_pb2.WORKER_STATUS_RUNNING: "running", worker_pb2.WORKER_STATUS_STOPPED: "stopped",
    worker_pb2.WORKER_STATUS_PENDING: "moving", worker_pb2.WORKER_STATUS_STOPPING: "moving",
    worker_pb2.WORKER_STATUS_SHUTTING_DOWN: "gone", worker_pb2.WORKER_STATUS_TERMINATED: "gone"}

Rule = Callable[[PilotState], Decision]
DecideUnderCas = Callable[[str, Rule], Awaitable[Decision]]


class Remediation:
    def __init__(self, registry: RegistryPort, publisher: DecisionPublisher, policy: RemediationPolicy) -> None:
        self._registry = registry
        self._publisher = publisher
        self.policy = policy

    async def handle(self, worker: worker_pb2.Worker, sample: events_pb2.MetricSample, at: datetime,
                     decide: DecideUnderCas) -> None:
        """worker: as the registry's GetWorker gave it (its root device type too: remediation asks AWS nothing);
        decide: the Pilot's compare-and-set on the worker's state; actions follow only a successful write."""
        if self.policy.mode == "off" or sample.status not in _POWER:
            return  # UNSPECIFIED: a state the collector could not map tells nothing
        system = _CHECKS.get(sample.system_status_check, "unknown")
        obs = CheckObservation(at=at, power=_POWER[sample.status], system=system,
                               instance=_CHECKS.get(sample.instance_status_check, "unknown"),
                               ebs_backed=_EBS_BACKED.get(worker.root_device_type))
        for action in await self._claim(worker.id, decide, lambda s: remediate(s, obs, self.policy)):
            await self._do(worker, at, action, decide)

    async def _claim(self, worker_id: str, decide: DecideUnderCas,
                     rule: Callable[[RemediationState], RemedyDecision]) -> list[RemedyAction]:
        found: list[RemedyAction] = []

        def step(state: PilotState) -> Decision:
            got = rule(state.remediation)
            found[:] = got.actions
            return Decision(replace(state, remediation=got.state), [])
        await decide(worker_id, step)
        return found

    async def _do(self, worker: worker_pb2.Worker, at: datetime, action: RemedyAction,
                  decide: DecideUnderCas) -> None:
        calls = {"reboot": self._registry.reboot_worker, "stop": self._registry.stop_worker,
                 "start": self._registry.start_worker}
        call = calls.get(action.kind)
        if call is not None:
            try:
                await call(worker.id)
            except RegistryCallFailed as exc:
                log.warning("remediation refused", extra={"worker_id": worker.id, "error": str(exc)})
                if action.kind == "start":
                    await self._claim(worker.id, decide, start_refused)
                    return
                why = f"{action.reason}; the registry refused the {action.kind} ({exc}): left alone"
                for escalation in await self._claim(worker.id, decide, lambda s: failed(s, why)):
                    await self._announce(worker, at, escalation.kind, escalation.reason)
                return
        await self._announce(worker, at, _ANNOUNCED.get(action.kind, action.kind), action.reason)

    async def _announce(self, w: worker_pb2.Worker, at: datetime, action: str, reason: str) -> None:
        mode = self.policy.mode
        decision_id = f"{w.id}.{action}.{int(at.timestamp() * 1000)}"
        when = Timestamp()
        when.FromDatetime(at)
        summary = f"{action} ({mode}): {w.name or w.id}: {reason}"
        decision = events_pb2.AutopilotDecision(
            decision_id=decision_id, worker_id=w.id, action=action, mode=mode, reason=reason, decide_time=when,
            worker_name=w.name, instance_type=w.instance_type)
        alert = alert_pb2.Alert(
            id=f"{w.id}.{REMEDIATION_RULE}", worker_id=w.id, worker_name=w.name, instance_id=w.instance_id,
            region=w.region, rule=REMEDIATION_RULE, severity=_SEVERITY.get(action, alert_pb2.ALERT_SEVERITY_INFO),
            state=alert_pb2.ALERT_STATE_RESOLVED if action in _RESOLVING else alert_pb2.ALERT_STATE_FIRING,
            summary=summary, start_time=when, transition_id=decision_id)
        await self._publisher.publish(decision, alert)
        metrics.DECISIONS.labels(action, mode).inc()
        log.info(summary, extra={"worker_id": w.id, "action": action, "mode": mode})
