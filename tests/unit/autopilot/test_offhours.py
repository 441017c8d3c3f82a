"""Off-hours schedules with a frozen clock (every function takes the time): weekdays and hours in an IANA zone
across a daylight-saving change, a holiday, a missed minute, a hand-made change respected, labs waited for."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from autopilot.domain.offhours import Schedule, parse, step

BERLIN = "Mon-Fri 08:00-19:00 Europe/Berlin"


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def sched(text: str) -> Schedule:
    got = parse(text)
    assert got is not None
    return got


@pytest.mark.parametrize(("text", "error"), [
    ("Mon-Fri 08:00-19:00", "expected"),
    ("Mon-Fri 08:00-19:00 Mars/Olympus", "unknown time zone"),
    ("Mon-Fry 08:00-19:00 UTC", "bad weekdays"),
    ("Mon-Fri 19:00-08:00 UTC", "open before"),
    ("Mon-Fri 8h-19h UTC", "bad hours"),
    ("Mon-Fri 08:00-19:00 UTC holidays=2026-13-01", "bad holiday"),
    ("Mon-Fri 08:00-19:00 UTC sometimes", "unknown option"),
])
def test_bad_schedules_are_refused_naming_the_part(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse(text)


def test_off_opts_out_and_day_ranges_wrap() -> None:
    assert parse("off") is None and parse("OFF") is None
    assert sched("Fri-Mon 08:00-19:00 UTC").weekdays == frozenset({4, 5, 6, 0})
    assert sched("mon,wed,fri 08:00-19:00 UTC").weekdays == frozenset({0, 2, 4})


def test_hours_are_in_the_schedules_zone_across_a_daylight_saving_change() -> None:
    s = sched(BERLIN)  # Berlin leaves summer time on Sunday 2026-10-25
    assert s.desired(utc(2026, 10, 23, 6, 30)) == "up"  # Friday 08:30 CEST (UTC+2)
    assert s.desired(utc(2026, 10, 26, 6, 30)) == "down"  # Monday 07:30 CET (UTC+1): same UTC time, closed
    assert s.desired(utc(2026, 10, 26, 7, 30)) == "up"
    # Monday before opening: the last change is Friday's closing, 19:00 CEST = 17:00 UTC.
    assert s.last_change(utc(2026, 10, 26, 6, 30)) == (utc(2026, 10, 23, 17, 0), "down")
    # Monday's opening is 08:00 CET = 07:00 UTC.
    assert s.last_change(utc(2026, 10, 26, 7, 30)) == (utc(2026, 10, 26, 7, 0), "up")


def test_a_zone_west_of_utc_has_its_own_day() -> None:
    s = sched("Mon-Fri 08:00-19:00 America/New_York")
    assert s.desired(utc(2026, 12, 4, 23, 30)) == "up"  # Friday 18:30 EST, already Saturday in UTC
    assert s.last_change(utc(2026, 12, 5, 1, 0)) == (utc(2026, 12, 5, 0, 0), "down")


def test_a_holiday_is_a_day_off() -> None:
    s = sched(f"{BERLIN} holidays=2026-12-25")  # a Friday
    assert s.desired(utc(2026, 12, 25, 10, 0)) == "down"
    assert s.last_change(utc(2026, 12, 25, 10, 0)) == (utc(2026, 12, 24, 18, 0), "down")
    assert s.last_change(utc(2026, 12, 28, 7, 30)) == (utc(2026, 12, 28, 7, 0), "up")  # Monday 08:00 CET
    assert sched(BERLIN).last_change(utc(2026, 12, 25, 10, 0)) == (utc(2026, 12, 25, 7, 0), "up")


def test_a_missed_minute_still_stops() -> None:
    s = sched(BERLIN)
    closing = utc(2026, 12, 2, 18, 0)  # Wednesday 19:00 CET
    for late in (utc(2026, 12, 2, 18, 0), utc(2026, 12, 2, 18, 7), utc(2026, 12, 3, 2, 0)):
        assert step(s, late, running=True, running_nodes=0, handled=None).act == "stop"
        assert step(s, late, running=True, running_nodes=0, handled=None).change_at == closing


def test_a_handled_change_is_never_acted_on_again_so_a_hand_made_start_stays() -> None:
    s = sched(BERLIN)
    closing = utc(2026, 12, 2, 18, 0)
    # someone started the worker again at 21:00 after the scheduled stop: it stays up until the next change
    assert step(s, utc(2026, 12, 2, 20, 0), running=True, running_nodes=0, handled=closing).act is None
    # the next change (Thursday 08:00) applies again: the worker is up, so only recorded
    got = step(s, utc(2026, 12, 3, 7, 5), running=True, running_nodes=0, handled=closing)
    assert (got.act, got.change_at) == (None, utc(2026, 12, 3, 7, 0))


def test_opening_starts_a_stopped_worker_unless_stop_only() -> None:
    at = utc(2026, 12, 3, 7, 5)
    assert step(sched(BERLIN), at, running=False, running_nodes=None, handled=None).act == "start"
    got = step(sched(f"{BERLIN} stop-only"), at, running=False, running_nodes=None, handled=None)
    assert (got.act, got.change_at) == (None, utc(2026, 12, 3, 7, 0))


def test_a_running_lab_or_an_unknown_controller_makes_the_stop_wait() -> None:
    s = sched(BERLIN)
    at = utc(2026, 12, 2, 18, 30)
    for nodes in (2, None):
        got = step(s, at, running=True, running_nodes=nodes, handled=None)
        assert (got.act, got.change_at) == ("wait", None)  # not handled: asked again on the next sample
    assert step(s, at, running=False, running_nodes=None, handled=None).act is None


def test_no_schedule_no_step() -> None:
    assert step(None, utc(2026, 12, 2, 18, 30), running=True, running_nodes=0, handled=None).act is None
