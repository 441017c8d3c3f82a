"""The autopilot's use-case: one metric sample in, the worker's controller probed, the pure decision taken
under compare-and-set, then its actions done (a decision event and an alert for each; StopWorker for a stop).
Remediation of impaired status checks (service.remedy) follows on the same sample, under the same state.

A stop is preceded by a fresh probe of the controller: a lab node started since the sample, or a controller
that stopped answering, cancels it. The stop is claimed in the state before the registry is called and the
claim settled after its answer; only the replica that settles the newest claim announces the stop, so a stop
finished by another replica (its claimer died, domain.autostop) is announced once. Off-hours schedules (tag
`cmlmon:offhours` or OFFHOURS_SCHEDULE) are followed on the same samples, under the same mode."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from autopilot import metrics
from autopilot.adapters.addresses import CML_URL_TAG, ControllerAddresses, TagAddresses
from autopilot.adapters.publisher import AUTOSTOP_RULE, IDLE_RULE, DecisionPublisher
from autopilot.adapters.registry import RegistryPort
from autopilot.adapters.state_kv import StateConflict, StateStore
from autopilot.domain.autostop import Action, AutostopPolicy, Decision, PilotState, decide, follow_schedule
from autopilot.domain.controller import ControllerReading, Transition, controller_alerts
from autopilot.domain.idle import IdleState, Observation
from autopilot.domain.offhours import OFFHOURS_TAG, Schedule
from autopilot.domain.offhours import parse as parse_schedule
from autopilot.domain.prices import cost, duration
from autopilot.errors import AutopilotError, RegistryCallFailed
from autopilot.service.remedy import Remediation
from cml.monitor.v1 import alert_pb2, events_pb2, worker_pb2
from cmlmon_core.cml import Controller, ControllerProbe

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 8
RECORD_EVERY_SECONDS = 600  # unchanged controller figures are recorded with the worker this often
_SEVERITY = {"idle": alert_pb2.ALERT_SEVERITY_INFO, "would_stop": alert_pb2.ALERT_SEVERITY_INFO,
             "warned": alert_pb2.ALERT_SEVERITY_WARNING, "stopped": alert_pb2.ALERT_SEVERITY_INFO,
             "stop_failed": alert_pb2.ALERT_SEVERITY_WARNING, "start_failed": alert_pb2.ALERT_SEVERITY_WARNING,
             "schedule_waiting": alert_pb2.ALERT_SEVERITY_WARNING}


@dataclass(frozen=True, slots=True)
class Context:
    worker: worker_pb2.Worker
    obs: Observation
    controller: Controller | None
    url: str  # of the worker's controller; empty when it has none


class Pilot:
    def __init__(self, registry: RegistryPort, probe: ControllerProbe, store: StateStore,
                 publisher: DecisionPublisher, policy: AutostopPolicy, prices: Mapping[str, float],
                 default_schedule: str = "", addresses: ControllerAddresses | None = None,
                 remediation: Remediation | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._registry = registry
        self._probe = probe
        self._store = store
        self._publisher = publisher
        self.policy = policy
        self._prices = prices
        self._default_schedule = default_schedule
        self._addresses = addresses or TagAddresses()
        self._remediation = remediation
        self._clock = clock

    async def handle_sample(self, sample: events_pb2.MetricSample) -> None:
        """Raises AutopilotError when the sample must be handled again later."""
        worker = await self._registry.get_worker(sample.worker_id)
        if worker is None:
            return  # not (or no longer) a registered worker
        running = sample.status == worker_pb2.WORKER_STATUS_RUNNING
        url = await self._addresses.url(worker) if running else worker.tags.get(CML_URL_TAG, "")
        controller = await self._probe.probe(url) if url and running else None
        if controller is not None:
            _export(worker.id, controller)
            await self._controller_alerts(worker, controller, sample)
            await self._record(worker, controller)
        at = sample.observe_time.ToDatetime(tzinfo=UTC) if sample.HasField("observe_time") else datetime.now(UTC)
        obs = Observation(at=at, cpu=sample.cpu_utilization if sample.HasField("cpu_utilization") else None,
                          running_nodes=controller.running_nodes if controller and controller.reachable else None,
                          has_controller=bool(url), network=_network(sample))
        ctx = Context(worker, obs, controller, url)
        tags = dict(worker.tags)
        decision = await self._decide(worker.id, lambda state: decide(state, obs, running=running, tags=tags,
                                                                 policy=self.policy, now=self._clock()))
        metrics.IDLE_SECONDS.labels(worker.id).set(
            (decision.state.idle.last_seen - decision.state.idle.idle_since).total_seconds()
            if decision.state.idle.idle_since and decision.state.idle.last_seen else 0)
        if decision.stopped_seconds:
            metrics.STOPPED_HOURS.labels(worker.id).inc(decision.stopped_seconds / 3600)
            saved = cost(self._prices, worker.instance_type, decision.stopped_seconds)
            if saved is not None:
                metrics.SAVED_USD.labels(worker.id).inc(saved)
        for action in decision.actions:
            await self._act(ctx, action)
        schedule = self._schedule(worker)
        if schedule is not None:
            followed = await self._decide(worker.id, lambda state: follow_schedule(
                state, schedule, obs, running=running, mode=self.policy.mode))
            for action in followed.actions:
                await self._act(ctx, action)
        if self._remediation is not None:
            await self._remediation.handle(worker, sample, at, self._decide)

    async def _controller_alerts(self, worker: worker_pb2.Worker, c: Controller,
                                 sample: events_pb2.MetricSample) -> None:
        reading = ControllerReading(c.reachable, c.healthy, c.in_compliance, c.error, c.authorization)
        transitions: list[Transition] = []

        def rule(state: PilotState) -> Decision:
            firing, found = controller_alerts(state.controller_alerts, reading)
            transitions[:] = found
            return Decision(replace(state, controller_alerts=firing), [])
        await self._decide(worker.id, rule)
        for t in transitions:
            stamp = sample.observe_time.ToMilliseconds()
            await self._publisher.publish_alert(alert_pb2.Alert(
                id=f"{worker.id}.{t.rule}", worker_id=worker.id, worker_name=worker.name,
                instance_id=worker.instance_id, region=worker.region, rule=t.rule,
                severity=alert_pb2.ALERT_SEVERITY_WARNING,
                state=alert_pb2.ALERT_STATE_FIRING if t.state == "firing" else alert_pb2.ALERT_STATE_RESOLVED,
                summary=f"{worker.name or worker.id}: {t.summary}", start_time=sample.observe_time,
                transition_id=f"{worker.id}.{t.rule}.{stamp}.{t.state}"))

    async def _record(self, worker: worker_pb2.Worker, c: Controller) -> None:
        """Have the registry keep the figures with the worker (GetWorker, cmlmon) when they changed or the
        recorded ones are old; a failure only waits for the next sample."""
        now = datetime.now(UTC)
        found = controller_message(c, now)
        if not needs_recording(worker.controller if worker.HasField("controller") else None, found, now):
            return
        try:
            await self._registry.set_controller(worker.id, found)
        except RegistryCallFailed as exc:
            log.warning("controller figures not recorded", extra={"worker_id": worker.id, "error": str(exc)})

    def _schedule(self, worker: worker_pb2.Worker) -> Schedule | None:
        text = worker.tags.get(OFFHOURS_TAG) or self._default_schedule
        if not text:
            return None
        try:
            return parse_schedule(text)
        except ValueError as exc:
            log.warning("ignoring a bad off-hours schedule", extra={"worker_id": worker.id, "error": str(exc)})
            return None

    async def _decide(self, worker_id: str, rule: Callable[[PilotState], Decision]) -> Decision:
        for _ in range(CAS_ATTEMPTS):
            state, revision = await self._store.get(worker_id)
            decision = rule(state)
            if decision.state == state:
                return decision
            try:
                await self._store.put(worker_id, decision.state, revision)
            except StateConflict:
                continue  # another replica moved first: decide again on what it wrote
            return decision
        raise AutopilotError(f"state of {worker_id} kept changing")

    async def _act(self, ctx: Context, action: Action) -> None:
        enforce = self.policy.mode == "enforce"
        if action.kind == "scheduled_start" and enforce:
            await self._start(ctx, action)
            return
        if action.kind != "stop" and not (action.kind == "scheduled_stop" and enforce):
            await self._announce(ctx, action.kind, action.reason, action.idle_seconds)
            return
        if ctx.obs.has_controller:
            fresh = await self._probe.probe(ctx.url)
            if not fresh.reachable or (fresh.running_nodes or 0) > 0:
                why = (f"{fresh.running_nodes} lab node(s) running" if fresh.reachable
                       else "controller did not answer")
                await self._reset(ctx.worker.id)
                await self._announce(ctx, "cancelled", f"stop cancelled: {why}", action.idle_seconds)
                return
        try:
            await self._registry.stop_worker(ctx.worker.id)
        except RegistryCallFailed as exc:
            log.warning("auto-stop failed", extra={"worker_id": ctx.worker.id, "error": str(exc)})
            await self._reset(ctx.worker.id)
            await self._announce(ctx, "stop_failed", str(exc), action.idle_seconds)
            return
        if action.claim is not None and not await self._settle(ctx.worker.id, action.claim):
            log.info("a newer claim took the stop over; its replica announces it", extra={"worker_id": ctx.worker.id})
            return
        await self._announce(ctx, "stopped" if action.kind == "stop" else action.kind, action.reason,
                             action.idle_seconds)

    async def _settle(self, worker_id: str, claim: datetime) -> bool:
        """After the registry accepted the stop claimed at `claim`: settle the claim. False when a newer claim
        has been made since (this replica was presumed dead): that claim's replica settles and announces it."""
        for _ in range(CAS_ATTEMPTS):
            state, revision = await self._store.get(worker_id)
            newer = (state.stop_claimed_at is not None and state.stop_claimed_at != claim) or (
                state.stop_settled is not None and state.stop_settled > claim)
            if newer:
                return False
            settled = replace(state, stop_claimed_at=None, stop_settled=claim)
            try:
                await self._store.put(worker_id, settled, revision)
            except StateConflict:
                continue
            return True
        raise AutopilotError(f"state of {worker_id} kept changing")

    async def _start(self, ctx: Context, action: Action) -> None:
        try:
            await self._registry.start_worker(ctx.worker.id)
        except RegistryCallFailed as exc:
            log.warning("scheduled start failed", extra={"worker_id": ctx.worker.id, "error": str(exc)})
            await self._announce(ctx, "start_failed", str(exc), 0.0)
            return
        await self._announce(ctx, action.kind, action.reason, 0.0)

    async def _reset(self, worker_id: str) -> None:
        """After a stop that did not happen: forget the idle run and the request, so it starts over."""
        for _ in range(CAS_ATTEMPTS):
            state, revision = await self._store.get(worker_id)
            try:
                await self._store.put(worker_id, replace(PilotState(), idle=IdleState(last_seen=state.idle.last_seen),
                                                         remediation=state.remediation), revision)
                return
            except StateConflict:
                continue

    async def _announce(self, ctx: Context, action: str, reason: str, idle_seconds: float) -> None:
        w = ctx.worker
        decision_id = f"{w.id}.{action}.{int(ctx.obs.at.timestamp() * 1000)}"
        when = Timestamp()
        when.FromDatetime(ctx.obs.at)
        hourly = self._prices.get(w.instance_type)
        spent = cost(self._prices, w.instance_type, idle_seconds)
        decision = events_pb2.AutopilotDecision(
            decision_id=decision_id, worker_id=w.id, action=action, mode=self.policy.mode, reason=reason,
            idle_seconds=idle_seconds, decide_time=when, worker_name=w.name, instance_type=w.instance_type)
        if spent is not None:
            decision.idle_cost = spent
        if hourly is not None:
            decision.hourly_price = hourly
        if ctx.obs.running_nodes is not None:
            decision.running_nodes = ctx.obs.running_nodes
        summary = _summary(w, action, reason, idle_seconds, spent, self.policy.mode)
        rule = IDLE_RULE if action in ("idle", "busy") else AUTOSTOP_RULE
        state = alert_pb2.ALERT_STATE_RESOLVED if action == "busy" else alert_pb2.ALERT_STATE_FIRING
        alert = alert_pb2.Alert(
            id=f"{w.id}.{rule}", worker_id=w.id, worker_name=w.name, instance_id=w.instance_id, region=w.region,
            rule=rule, severity=_SEVERITY.get(action, alert_pb2.ALERT_SEVERITY_INFO), state=state,
            value=idle_seconds, summary=summary, start_time=when, transition_id=decision_id)
        await self._publisher.publish(decision, alert)
        metrics.DECISIONS.labels(action, self.policy.mode).inc()
        log.info(summary, extra={"worker_id": w.id, "action": action, "mode": self.policy.mode})


def controller_message(c: Controller, probed_at: datetime) -> worker_pb2.CmlController:
    """A probe's figures as the Worker's controller field; unknown figures stay absent."""
    msg = worker_pb2.CmlController(url=c.url, reachable=c.reachable, error=c.error, version=c.version,
                                   licence_registration=c.registration, licence_authorization=c.authorization)
    if c.healthy is not None:
        msg.healthy = c.healthy
    if c.labs is not None:
        msg.labs = c.labs
    if c.running_nodes is not None:
        msg.running_nodes = c.running_nodes
    msg.probe_time.FromDatetime(probed_at)
    return msg


def needs_recording(recorded: worker_pb2.CmlController | None, found: worker_pb2.CmlController,
                    now: datetime) -> bool:
    """True when the figures differ from those recorded (probe time aside), or those are RECORD_EVERY old."""
    if recorded is None:
        return True
    if (now - recorded.probe_time.ToDatetime(tzinfo=UTC)).total_seconds() >= RECORD_EVERY_SECONDS:
        return True
    same = worker_pb2.CmlController()
    same.CopyFrom(found)
    same.probe_time.CopyFrom(recorded.probe_time)
    return same != recorded


def _network(sample: events_pb2.MetricSample) -> float | None:
    """Bytes per second in + out; None unless CloudWatch had both."""
    if not (sample.HasField("network_in_bytes_per_second") and sample.HasField("network_out_bytes_per_second")):
        return None
    return sample.network_in_bytes_per_second + sample.network_out_bytes_per_second


def _summary(w: worker_pb2.Worker, action: str, reason: str, idle_seconds: float, spent: float | None,
             mode: str) -> str:
    money = f", about ${spent:.2f}" if spent is not None else ""
    return f"{action} ({mode}): {w.name or w.id} idle for {duration(idle_seconds)}{money}; {reason}"



def _export(worker_id: str, c: Controller) -> None:
    metrics.CML_PROBE_TIME.labels(worker_id).set_to_current_time()
    metrics.CML_REACHABLE.labels(worker_id).set(1 if c.reachable else 0)
    if not c.reachable:
        return
    metrics.CML_HEALTHY.labels(worker_id).set(1 if c.healthy else 0)
    metrics.CML_LICENCE_REGISTERED.labels(worker_id).set(1 if c.licence_registered else 0)
    if c.in_compliance is not None:
        metrics.CML_LICENCE_IN_COMPLIANCE.labels(worker_id).set(1 if c.in_compliance else 0)
    metrics.CML_LABS.labels(worker_id).set(c.labs or 0)
    metrics.CML_RUNNING_NODES.labels(worker_id).set(c.running_nodes or 0)
    if c.version:
        metrics.CML_VERSION.labels(worker_id, c.version).set(1)
