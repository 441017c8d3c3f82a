"""Controller alerts: unhealthy (or unreachable) and licence out of compliance fire once and resolve once; an
unreachable controller leaves the licence alert as it was."""

from __future__ import annotations

from autopilot.domain.controller import NONCOMPLIANT, UNHEALTHY, ControllerReading, controller_alerts

OK = ControllerReading(True, True, True, authorization="IN_COMPLIANCE")
SICK = ControllerReading(True, False, True)
GONE = ControllerReading(False, None, None, error="ConnectError")
OUT = ControllerReading(True, True, False, authorization="OUT_OF_COMPLIANCE")


def run(*readings: ControllerReading) -> list[tuple[str, str]]:
    firing: frozenset[str] = frozenset()
    seen: list[tuple[str, str]] = []
    for reading in readings:
        firing, found = controller_alerts(firing, reading)
        seen += [(t.rule, t.state) for t in found]
    return seen


def test_healthy_controller_raises_nothing() -> None:
    assert run(OK, OK, OK) == []


def test_unhealthy_fires_once_and_resolves_once() -> None:
    assert run(OK, SICK, SICK, OK, OK) == [(UNHEALTHY, "firing"), (UNHEALTHY, "resolved")]


def test_unreachable_is_unhealthy_and_keeps_the_licence_alert() -> None:
    assert run(OUT, GONE, GONE, OUT, OK) == [(NONCOMPLIANT, "firing"), (UNHEALTHY, "firing"),
                                             (UNHEALTHY, "resolved"), (NONCOMPLIANT, "resolved")]


def test_the_summary_names_the_authorization_status() -> None:
    _, found = controller_alerts(frozenset(), OUT)
    assert found[0].summary == "licence authorization is OUT_OF_COMPLIANCE"
