"""Auto-remediation as a pure function from (state, observation) to (state, actions), beside auto-stop.

A running worker whose EC2 status check stays impaired for `impaired_for_seconds` is remediated once: a failed
instance check by a reboot, a failed system check by a stop and a start (which moves an EBS-backed instance to
healthy hardware; an instance-store-backed one would lose its disks, so it is escalated instead). At most one
remediation per worker per `period_seconds`: impaired again within it, the worker is escalated, not touched.
A worker still not healthy `recover_within_seconds` after the action is escalated and left alone. Both checks
"ok" again ends the episode (`recovered`, which resolves its alert). "dry-run" only says, once per impaired
run, what it would do; "off" does nothing. The state is part of the worker's autopilot state in KV, changed by
compare-and-set, so an action is claimed once across replicas before it is done."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from autopilot.domain.prices import duration

Mode = Literal["off", "dry-run", "enforce"]
Check = Literal["ok", "impaired", "unknown"]  # an EC2 status check; unknown: initializing, no data, n/a
Power = Literal["running", "stopped", "moving", "gone"]  # moving: pending or stopping; gone: terminating/ed
Remedy = Literal["reboot", "stop_start"]
RemedyKind = Literal["would_reboot", "would_stop_start", "reboot", "stop", "start", "escalated", "recovered",
                     "ended"]


@dataclass(frozen=True, slots=True)
class RemediationPolicy:
    mode: Mode = "off"
    impaired_for_seconds: float = 600.0  # a status check impaired this long triggers a remediation
    recover_within_seconds: float = 1800.0  # not healthy this long after the action: escalated
    period_seconds: float = 86400.0  # at most one remediation per worker per period


@dataclass(frozen=True, slots=True)
class CheckObservation:
    at: datetime
    power: Power
    system: Check
    instance: Check
    ebs_backed: bool | None = None  # None: not known (the registry did not record the root device type)


@dataclass(frozen=True, slots=True)
class RemediationState:
    last_seen: datetime | None = None
    impaired_since: datetime | None = None  # first impaired observation of the current episode
    announced: bool = False  # dry-run: the would_* notice of this episode was sent
    remedy: Remedy | None = None  # the remediation done in this episode
    acted_at: datetime | None = None  # when the last remediation was claimed (kept: once per period)
    start_pending: bool = False  # stop-and-start: stopped for it, start to be asked once stopped
    escalated: bool = False  # this episode was escalated; nothing more is done until it ends


@dataclass(frozen=True, slots=True)
class RemedyAction:
    kind: RemedyKind
    reason: str


@dataclass(frozen=True, slots=True)
class RemedyDecision:
    state: RemediationState
    actions: list[RemedyAction]


def remediate(state: RemediationState, obs: CheckObservation, policy: RemediationPolicy) -> RemedyDecision:
    """What to do after obs; an observation older than the last one seen changes nothing."""
    if policy.mode == "off" or (state.last_seen is not None and obs.at < state.last_seen):
        return RemedyDecision(state, [])
    state = replace(state, last_seen=obs.at)
    if state.start_pending and obs.power == "stopped":
        return RemedyDecision(replace(state, start_pending=False),
                              [RemedyAction("start", "stopped for a stop-and-start: starting on healthy hardware")])
    in_episode = state.remedy is not None or state.escalated or state.announced
    restarting = state.remedy == "stop_start" and obs.power == "stopped"  # the collector may not see it start yet
    if obs.power in ("stopped", "gone") and not restarting:
        ended = [RemedyAction("ended", f"worker {obs.power}: remediation ends")] if in_episode else []
        return RemedyDecision(_end(state), ended)
    if obs.power == "running" and obs.system == "ok" and obs.instance == "ok":
        healthy = [RemedyAction("recovered", _recovered(state, obs))] if in_episode else []
        return RemedyDecision(_end(state), healthy)
    impaired = obs.power == "running" and "impaired" in (obs.system, obs.instance)
    if impaired and state.impaired_since is None:
        state = replace(state, impaired_since=obs.at)
    if state.escalated:
        return RemedyDecision(state, [])
    if state.remedy is not None:
        return _unless_recovered(state, obs, policy)
    if not impaired or state.impaired_since is None:
        return RemedyDecision(state, [])
    if _seconds(state.impaired_since, obs.at) < policy.impaired_for_seconds:
        return RemedyDecision(state, [])
    return _act(state, obs, policy)


def _act(state: RemediationState, obs: CheckObservation, policy: RemediationPolicy) -> RemedyDecision:
    remedy: Remedy = "stop_start" if obs.system == "impaired" else "reboot"
    which = "system" if remedy == "stop_start" else "instance"
    since = duration(_seconds(state.impaired_since or obs.at, obs.at))
    if remedy == "stop_start" and obs.ebs_backed is not True:
        store = "is not EBS-backed" if obs.ebs_backed is False else "has an unknown root device type"
        return _escalate(state, f"system status check impaired for {since}; the instance {store}, so a "
                                "stop-and-start could lose its disks: left alone")
    if state.acted_at is not None and _seconds(state.acted_at, obs.at) < policy.period_seconds:
        return _escalate(state, f"{which} status check impaired again for {since}, "
                                f"{duration(_seconds(state.acted_at, obs.at))} after the last remediation "
                                f"(at most one per {duration(policy.period_seconds)}): left alone")
    reason = f"{which} status check impaired for {since}"
    if policy.mode == "dry-run":
        if state.announced:
            return RemedyDecision(state, [])
        would: RemedyKind = "would_reboot" if remedy == "reboot" else "would_stop_start"
        return RemedyDecision(replace(state, announced=True), [RemedyAction(would, reason)])
    first: RemedyKind = "reboot" if remedy == "reboot" else "stop"
    return RemedyDecision(replace(state, remedy=remedy, acted_at=obs.at, start_pending=remedy == "stop_start"),
                          [RemedyAction(first, reason)])


def _unless_recovered(state: RemediationState, obs: CheckObservation, policy: RemediationPolicy) -> RemedyDecision:
    """A remediation was done in this episode and the worker is not healthy yet: wait, up to a point."""
    assert state.acted_at is not None
    waited = _seconds(state.acted_at, obs.at)
    if waited < policy.recover_within_seconds:
        return RemedyDecision(state, [])
    what = "reboot" if state.remedy == "reboot" else "stop-and-start"
    return _escalate(replace(state, start_pending=False),
                     f"not healthy {duration(waited)} after the {what} (system check {obs.system}, instance "
                     f"check {obs.instance}, {obs.power}): left alone")


def start_refused(state: RemediationState) -> RemedyDecision:
    """The start of a stop-and-start was refused (the registry may not have seen the stop finish yet, or EC2 has
    no capacity now): asked again on the next stopped observation, until the episode is escalated."""
    return RemedyDecision(replace(state, start_pending=state.remedy == "stop_start" and not state.escalated), [])


def failed(state: RemediationState, reason: str) -> RemedyDecision:
    """The registry refused the remediation's call: escalated, and nothing more is tried in this episode."""
    return _escalate(replace(state, start_pending=False), reason)


def _escalate(state: RemediationState, reason: str) -> RemedyDecision:
    return RemedyDecision(replace(state, escalated=True), [RemedyAction("escalated", reason)])


def _end(state: RemediationState) -> RemediationState:
    return RemediationState(last_seen=state.last_seen, acted_at=state.acted_at)


def _recovered(state: RemediationState, obs: CheckObservation) -> str:
    if state.remedy is None:
        return "status checks ok again"
    what = "reboot" if state.remedy == "reboot" else "stop-and-start"
    return f"status checks ok {duration(_seconds(state.acted_at or obs.at, obs.at))} after the {what}"


def _seconds(since: datetime, until: datetime) -> float:
    return max((until - since).total_seconds(), 0.0)

