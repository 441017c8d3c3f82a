"""Auto-stop decisions as a pure function from (state, observation) to (state, actions).

Modes: "off" only notices idleness (the `idle` alert), "dry-run" also says once per idle run what it would do,
"enforce" warns, waits a grace period (any observation that is not quiet — a lab node started, CPU rose, data
went missing — cancels it) and then asks for one stop. A worker tagged `cmlmon:autostop=never` is never
stopped, and a worker with a running lab node is never quiet, so never stopped either. The state is kept per
worker in KV and changed by compare-and-set, so the actions of one observation happen once across replicas.

A stop is claimed in the state (stop_claimed_at, the replica's clock) before the registry is called, and the
claim is settled once the call answered. A claim left unsettled for longer than a replica takes to do the
stop (claim_seconds) belongs to a replica that died: the next observation finishes it (asks for the stop again
while the worker runs idle; StopWorker of a stopping worker changes nothing) or, if the worker is busy
by then, drops it, so the stop starts over with a warning; a worker seen stopped has nothing left to stop."""

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
    claim_seconds: float = 120.0  # longer than a live replica takes from claiming a stop to its StopWorker answer


@dataclass(frozen=True, slots=True)
class PilotState:
    """What the autopilot remembers about one worker."""

    idle: IdleState = field(default_factory=IdleState)
    idle_notified: bool = False  # the `idle` alert of the current idle run was sent
    dry_run_notified: bool = False
    skipped_notified: bool = False
    warned_at: datetime | None = None  # enforce: warning sent, grace period running
    stop_requested_at: datetime | None = None  # enforce: StopWorker asked for (once)
    stop_claimed_at: datetime | None = None  # wall clock of the claim of a stop whose call has not answered yet
    stop_settled: datetime | None = None  # the last claim settled (its stop announced)
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
    claim: datetime | None = None  # "stop": the claim to settle once the registry answered


@dataclass(frozen=True, slots=True)
class Decision:
    state: PilotState
    actions: list[Action]
    stopped_seconds: float = 0.0  # time stopped by the autopilot newly accounted by this observation


def opted_out(tags: dict[str, str]) -> bool:
    return tags.get(NEVER_TAG, "").strip().lower() == NEVER_VALUE


def claim_expired(state: PilotState, now: datetime, policy: AutostopPolicy) -> bool:
    """A stop was claimed and its replica did not settle the claim in time: it died or lost its connection."""
    claimed = state.stop_claimed_at
    return claimed is not None and (now - claimed).total_seconds() >= policy.claim_seconds


def decide(state: PilotState, obs: Observation, *, running: bool, tags: dict[str, str],
           policy: AutostopPolicy, now: datetime | None = None) -> Decision:
    """What to do after obs of a worker that is `running` (EC2 running) or not; `now` is the replica's clock
    (claims of stops are timed by it; obs.at when not given). An observation older than the last one seen (a
    redelivered sample, or one judged by another replica after a later one) changes nothing."""
    now = now or obs.at
    if state.idle.last_seen is not None and obs.at < state.idle.last_seen:
        return Decision(state, [])
    if not running:
        return _while_not_running(state, obs, now, policy)
    if state.stopped_since is not None:  # started again (by a person or a schedule): savings end here
        state = replace(state, stopped_since=None, accounted_until=None, stop_requested_at=None,
                        stop_claimed_at=None)
    new_idle = observe(state.idle, obs, policy.idle)
    state = replace(state, idle=new_idle)
    if not is_idle(new_idle, policy.idle):
        return _not_idle(state, obs, now, policy)
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
    if state.stop_claimed_at is not None:
        if not claim_expired(state, now, policy):
            return Decision(state, actions)  # a replica is doing it right now
        actions.append(Action("stop", "the replica that claimed the stop did not finish it", seconds, now))
        return Decision(replace(state, stop_claimed_at=now), actions)
    if state.stop_requested_at is not None:
        return _stop_again_if_lost(state, obs, now, actions, seconds)
    if state.warned_at is None:
        actions.append(Action("warned", f"will be stopped in {policy.grace_seconds:.0f} s unless it is used",
                              seconds))
        return Decision(replace(state, warned_at=obs.at), actions)
    if (obs.at - state.warned_at).total_seconds() < policy.grace_seconds:
        return Decision(state, actions)
    actions.append(Action("stop", "idle through the grace period", seconds, now))
    return Decision(replace(state, stop_requested_at=obs.at, stop_claimed_at=now, warned_at=None), actions)


def _stop_again_if_lost(state: PilotState, obs: Observation, now: datetime, actions: list[Action],
                        seconds: float) -> Decision:
    """A stop was asked for and the registry accepted it, yet the worker still runs, idle, a while later (the
    registry thought it stopped already, or it was started again unseen). Ask again, once per
    STOP_RETRY_SECONDS (a metal instance takes 5-10 minutes to stop, and is not "running" meanwhile)."""
    asked = state.stop_requested_at
    if asked is None or (obs.at - asked).total_seconds() < STOP_RETRY_SECONDS:
        return Decision(state, actions)
    actions.append(Action("stop", "a stop asked for earlier did not happen", seconds, now))
    return Decision(replace(state, stop_requested_at=obs.at, stop_claimed_at=now), actions)


def _not_idle(state: PilotState, obs: Observation, now: datetime, policy: AutostopPolicy) -> Decision:
    actions: list[Action] = []
    if state.warned_at is not None:
        actions.append(Action("cancelled", _why_busy(obs)))
    if state.idle_notified:
        actions.append(Action("busy", _why_busy(obs)))  # resolves the `idle` alert
    state = replace(state, warned_at=None, idle_notified=False, dry_run_notified=False, skipped_notified=False)
    if state.stop_claimed_at is None or claim_expired(state, now, policy):
        # Running and in use: a stop asked for earlier is over (or was lost with its replica, and is not
        # finished now); a new idle run starts over with a warning.
        state = replace(state, stop_requested_at=None, stop_claimed_at=None)
    return Decision(state, actions)


def _why_busy(obs: Observation) -> str:
    if obs.cpu is None:
        return "no CPU data"
    if obs.has_controller and obs.running_nodes is None:
        return "controller did not answer"
    if obs.has_controller and (obs.running_nodes or 0) > 0:
        return f"{obs.running_nodes} lab node(s) running"
    return f"cpu {obs.cpu:.1f} %"


def _while_not_running(state: PilotState, obs: Observation, now: datetime, policy: AutostopPolicy) -> Decision:
    """A stopped worker is not idle; if the autopilot stopped it, the time it stays stopped is counted. An
    expired claim is dropped: the worker is not running, there is nothing left to stop."""
    fresh = PilotState(stop_requested_at=state.stop_requested_at, stop_claimed_at=state.stop_claimed_at,
                       stop_settled=state.stop_settled, stopped_since=state.stopped_since,
                       accounted_until=state.accounted_until, idle=IdleState(last_seen=obs.at),
                       schedule_handled=state.schedule_handled, schedule_waiting=state.schedule_waiting,
                       controller_alerts=state.controller_alerts, remediation=state.remediation)
    if state.stop_requested_at is None:
        return Decision(fresh, [])
    if claim_expired(state, now, policy):
        fresh = replace(fresh, stop_claimed_at=None)
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
