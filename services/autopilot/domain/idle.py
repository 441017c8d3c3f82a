"""Idle detection as pure functions: a worker is idle when every observation for `idle_for` seconds had CPU and
network traffic (in + out) under their thresholds and (where the controller answered) no running lab node.
Missing data is not idleness: an observation without a CPU or network reading, or with a controller that did
not answer while one is configured, ends the idle run, so a new or just-started worker (no data yet) is never
idle."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime


@dataclass(frozen=True, slots=True)
class IdlePolicy:
    cpu_threshold: float = 5.0  # percent; idle means strictly below
    idle_for_seconds: float = 7200.0
    network_threshold: float = 50_000.0  # bytes per second, in + out; idle means strictly below


@dataclass(frozen=True, slots=True)
class Observation:
    """One sample of a running worker, with what its CML controller said (when it has one)."""

    at: datetime
    cpu: float | None  # None: CloudWatch had no datapoint
    running_nodes: int | None  # None: no controller, or it did not answer
    has_controller: bool = False
    network: float | None = None  # bytes per second in + out; None: CloudWatch had no datapoint for either


@dataclass(frozen=True, slots=True)
class IdleState:
    idle_since: datetime | None = None  # first observation of the current idle run
    last_seen: datetime | None = None


def is_quiet(obs: Observation, policy: IdlePolicy) -> bool:
    """True when this observation, on its own, shows nothing going on (and enough data to say so)."""
    if obs.cpu is None or obs.cpu >= policy.cpu_threshold:
        return False
    if obs.network is None or obs.network >= policy.network_threshold:
        return False
    if obs.has_controller:
        return obs.running_nodes == 0  # unreachable (None) is not "no lab"
    return True


def observe(state: IdleState, obs: Observation, policy: IdlePolicy) -> IdleState:
    """The idle run after obs; an observation older than the last one seen changes nothing."""
    if state.last_seen is not None and obs.at < state.last_seen:
        return state
    if not is_quiet(obs, policy):
        return IdleState(idle_since=None, last_seen=obs.at)
    return replace(state, idle_since=state.idle_since or obs.at, last_seen=obs.at)


def idle_seconds(state: IdleState) -> float:
    """How long the current idle run has lasted, up to the last observation (0 when not in one)."""
    if state.idle_since is None or state.last_seen is None:
        return 0.0
    return (state.last_seen - state.idle_since).total_seconds()


def is_idle(state: IdleState, policy: IdlePolicy) -> bool:
    return state.idle_since is not None and idle_seconds(state) >= policy.idle_for_seconds
