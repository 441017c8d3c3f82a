"""Auto-stop decisions as a pure function from (state, observation) to (state, actions).

Modes: "off" only notices idleness (the `idle` alert), "dry-run" also says once per idle run what it would do,
"enforce" warns, waits a grace period (any observation that is not quiet — a lab node started, CPU rose, data
went missing — cancels it) and then asks for one stop. A worker tagged `cmlmon:autostop=never` is never
stopped, and a worker with a running lab node is never quiet, so never stopped either. The state is kept per
worker in KV and changed by compare-and-set, so the actions of one observation happen once across replicas."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from autopilot.domain.idle import IdlePolicy, IdleState, Observation, idle_seconds, is_idle, observe
from autopilot.domain.offhours import Schedule, step
from autopilot.domain.remediation import RemediationState

Mode = Literal["off", "dry-run", "enforce"]
ActionKind = Literal["idle", "busy", "would_stop", "warned", "cancelled", "stop", "skipped",
                     "scheduled_stop", "scheduled_start", "schedule_waiting"]

NEVER_TAG = "cmlmon:autostop"
STOP_RETRY_SECONDS = 1800.0
NEVER_VALUE = "never"


@dataclass(frozen=True, slots=True)
class AutostopPolicy:
    mode: Mode = "off"
    grace_seconds: float = 900.0
    idle: IdlePolicy = field(default_factory=IdlePolicy)


@dataclass(frozen=True, slots=True)
class PilotState:
    """What the autopilot remembers about one worker."""

    idle: IdleState = field(default_factory=IdleState)
    idle_notified: bool = False  # the `idle` alert of the current idle run was sent
    dry_run_notified: bool = False
    skipped_notified: bool = False
    warned_at: datetime | None = None  # enforce: warning sent, grace period running
    stop_requested_at: datetime | None = None  # enforce: StopWorker asked for (once)
    stopped_since: datetime | None = None  # stopped by the autopilot and still stopped: savings accrue
    accounted_until: datetime | None = None  # savings counted up to here
    schedule_handled: datetime | None = None  # the last scheduled change acted on (or found already true)
    schedule_waiting: bool = False  # the `schedule_waiting` notice for the pending change was sent
    controller_alerts: frozenset[str] = frozenset()  # controller rules firing (domain.controller)
    remediation: RemediationState = field(default_factory=RemediationState)  # domain.remediation's own


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    reason: str
    idle_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    state: PilotState
    actions: list[Action]
    stopped_seconds: float = 0.0  # time stopped by the autopilot newly accounted by this observation


def opted_out(tags: dict[str, str]) -> bool:
    return tags.get(NEVER_TAG, "").strip().lower() == NEVER_VALUE


def decide(state: PilotState, obs: Observation, *, running: bool, tags: dict[str, str],
           policy: AutostopPolicy) -> Decision:
    """What to do after obs of a worker that is `running` (EC2 running) or not."""
    if not running:
        return _while_not_running(state, obs)
    if state.stopped_since is not None:  # started again (by a person or a schedule): savings end here
        state = replace(state, stopped_since=None, accounted_until=None, stop_requested_at=None)
    new_idle = observe(state.idle, obs, policy.idle)
    state = replace(state, idle=new_idle)
    if not is_idle(new_idle, policy.idle):
        return _not_idle(state, obs)
    seconds = idle_seconds(new_idle)
    actions: list[Action] = []
    if not state.idle_notified:
        actions.append(Action("idle", "cpu and network below their thresholds and no running lab node", seconds))
        state = replace(state, idle_notified=True)
    if policy.mode == "off":
        return Decision(state, actions)
    if opted_out(tags):
        if not state.skipped_notified:
            actions.append(Action("skipped", f"tagged {NEVER_TAG}={NEVER_VALUE}", seconds))
        return Decision(replace(state, skipped_notified=True), actions)
    if policy.mode == "dry-run":
        if not state.dry_run_notified:
            actions.append(Action("would_stop", "dry-run: idle long enough to be stopped", seconds))
        return Decision(replace(state, dry_run_notified=True), actions)
    if state.stop_requested_at is not None:
        return _stop_again_if_lost(state, obs, actions, seconds)
    if state.warned_at is None:
        actions.append(Action("warned", f"will be stopped in {policy.grace_seconds:.0f} s unless it is used",
                              seconds))
        return Decision(replace(state, warned_at=obs.at), actions)
    if (obs.at - state.warned_at).total_seconds() < policy.grace_seconds:
        return Decision(state, actions)
    actions.append(Action("stop", "idle through the grace period", seconds))
    return Decision(replace(state, stop_requested_at=obs.at, warned_at=None), actions)


def _stop_again_if_lost(state: PilotState, obs: Observation, actions: list[Action], seconds: float) -> Decision:
    """A stop was asked for, yet the worker still runs, idle, a while later: the replica that claimed the stop
    may have died before calling the registry (the claim is written first). Ask again, once per
    STOP_RETRY_SECONDS (a metal instance takes 5-10 minutes to stop, and is not "running" meanwhile)."""
    asked = state.stop_requested_at
    if asked is None or (obs.at - asked).total_seconds() < STOP_RETRY_SECONDS:
        return Decision(state, actions)
    actions.append(Action("stop", "a stop asked for earlier did not happen", seconds))
    return Decision(replace(state, stop_requested_at=obs.at), actions)


def _not_idle(state: PilotState, obs: Observation) -> Decision:
    actions: list[Action] = []
    if state.warned_at is not None:
        actions.append(Action("cancelled", _why_busy(obs)))
    if state.idle_notified:
        actions.append(Action("busy", _why_busy(obs)))  # resolves the `idle` alert
    return Decision(replace(state, warned_at=None, idle_notified=False, dry_run_notified=False,
                            skipped_notified=False), actions)


def _why_busy(obs: Observation) -> str:
    if obs.cpu is None:
        return "no CPU data"
    if obs.has_controller and obs.running_nodes is None:
        return "controller did not answer"
    if obs.has_controller and (obs.running_nodes or 0) > 0:
        return f"{obs.running_nodes} lab node(s) running"
    return f"cpu {obs.cpu:.1f} %"


def _while_not_running(state: PilotState, obs: Observation) -> Decision:
    """A stopped worker is not idle; if the autopilot stopped it, the time it stays stopped is counted."""
    fresh = PilotState(stop_requested_at=state.stop_requested_at, stopped_since=state.stopped_since,
                       accounted_until=state.accounted_until, idle=IdleState(last_seen=obs.at),
                       schedule_handled=state.schedule_handled, schedule_waiting=state.schedule_waiting,
                       controller_alerts=state.controller_alerts, remediation=state.remediation)
    if state.stop_requested_at is None:
        return Decision(fresh, [])
    since = state.stopped_since or obs.at
    start = state.accounted_until or since
    seconds = max((obs.at - start).total_seconds(), 0.0)
    return Decision(replace(fresh, stopped_since=since, accounted_until=max(obs.at, start)), [], seconds)


def follow_schedule(state: PilotState, schedule: Schedule | None, obs: Observation, *, running: bool,
                    mode: Mode) -> Decision:
    """The off-hours step for obs (see domain.offhours): a stop or start is claimed in the state (the change
    it handles) before it is done, so replicas do it once; in dry-run it is only announced; off ignores
    schedules. A stop waiting for a lab is announced once per scheduled change."""
    if mode == "off":
        return Decision(state, [])
    nodes = obs.running_nodes if obs.has_controller else 0  # no controller: the clock alone decides
    got = step(schedule, obs.at, running=running, running_nodes=nodes, handled=state.schedule_handled)
    if got.act == "wait":
        if state.schedule_waiting:
            return Decision(state, [])
        why = "controller did not answer" if nodes is None else f"{nodes} lab node(s) running"
        return Decision(replace(state, schedule_waiting=True),
                        [Action("schedule_waiting", f"off-hours stop waits: {why}")])
    if got.change_at is None:
        return Decision(state, [])
    state = replace(state, schedule_handled=got.change_at, schedule_waiting=False)
    if got.act is None:
        return Decision(state, [])
    kind: ActionKind = "scheduled_stop" if got.act == "stop" else "scheduled_start"
    reason = f"off-hours schedule: {'closed' if got.act == 'stop' else 'opening'} since {got.change_at.isoformat()}"
    if mode == "enforce" and got.act == "stop":
        state = replace(state, stop_requested_at=obs.at, warned_at=None)  # counted as saved time too
    return Decision(state, [Action(kind, reason)])
