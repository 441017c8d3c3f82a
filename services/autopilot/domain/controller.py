"""Alerts about a worker's CML controller as a pure function of what the last probe found: `cml_unhealthy`
(system health not valid, or the controller does not answer) and `cml_licence_noncompliant` (licence
authorization not IN_COMPLIANCE). Each fires once and resolves once; a probe that could not read the licence
(controller unreachable) leaves the licence alert as it was."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

UNHEALTHY = "cml_unhealthy"
NONCOMPLIANT = "cml_licence_noncompliant"


@dataclass(frozen=True, slots=True)
class ControllerReading:
    reachable: bool
    healthy: bool | None
    in_compliance: bool | None  # None: not known (unreachable, or no authorization status)
    error: str = ""
    authorization: str = ""


@dataclass(frozen=True, slots=True)
class Transition:
    rule: str
    state: Literal["firing", "resolved"]
    summary: str


def controller_alerts(firing: frozenset[str], reading: ControllerReading) -> tuple[frozenset[str], list[Transition]]:
    """The rules firing after reading, and the transitions to announce."""
    out: list[Transition] = []
    now = set(firing)
    unhealthy = not reading.reachable or reading.healthy is False
    why = f"controller unreachable: {reading.error}" if not reading.reachable else "system health is not valid"
    _toggle(now, out, UNHEALTHY, unhealthy, why, "controller healthy again")
    if reading.in_compliance is not None:
        status = reading.authorization or "not in compliance"
        _toggle(now, out, NONCOMPLIANT, not reading.in_compliance, f"licence authorization is {status}",
                "licence in compliance again")
    return frozenset(now), out


def _toggle(now: set[str], out: list[Transition], rule: str, bad: bool, fire: str, resolve: str) -> None:
    if bad and rule not in now:
        now.add(rule)
        out.append(Transition(rule, "firing", fire))
    elif not bad and rule in now:
        now.discard(rule)
        out.append(Transition(rule, "resolved", resolve))
