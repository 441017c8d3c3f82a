"""Off-hours schedules as pure functions of a clock reading.

A schedule says when a worker should be up: opening hours on some weekdays in an IANA time zone, minus
holidays. Outside them it should be stopped; with `restart` it is started again at opening (else stop-only).
Written as text, in the worker's tag `cmlmon:offhours` or the global OFFHOURS_SCHEDULE setting:

    "Mon-Fri 08:00-19:00 Europe/Berlin"                      stop at 19:00, start at 08:00 on working days
    "Mon-Fri 08:00-19:00 Europe/Berlin stop-only"            stop at 19:00, never start
    "Mon-Fri 08:00-19:00 America/New_York holidays=2026-12-25,2027-01-01"
    "off"                                                    (tag) opt out of the global schedule

The autopilot acts on the most recent *scheduled change* (a transition between up and down), not on the
current state: evaluated on every sample, a missed minute never means a missed stop (the last change is still
the last change), and a worker someone started or stopped by hand after that change stays as they left it
until the next change, because that change was already handled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

OFFHOURS_TAG = "cmlmon:offhours"
OPT_OUT = "off"
_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_LOOKBACK_DAYS = 14  # a holiday stretch or a weekend between changes is shorter than this

Desired = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class Schedule:
    weekdays: frozenset[int]  # 0 = Monday
    opens: time
    closes: time
    zone: ZoneInfo
    restart: bool = True
    holidays: frozenset[date] = frozenset()

    def desired(self, at: datetime) -> Desired:
        """Whether the worker should be up at `at` (an aware datetime)."""
        local = at.astimezone(self.zone)
        if local.weekday() not in self.weekdays or local.date() in self.holidays:
            return "down"
        return "up" if self.opens <= local.time() < self.closes else "down"

    def last_change(self, at: datetime) -> tuple[datetime, Desired] | None:
        """The most recent scheduled change at or before `at`: (when, what the worker should become); None
        when there was none in the look-back window."""
        local = at.astimezone(self.zone)
        for back in range(_LOOKBACK_DAYS + 1):
            day = local.date() - timedelta(days=back)
            candidates = [(self._moment(day, self.closes), "down"), (self._moment(day, self.opens), "up")]
            for moment, becomes in sorted(candidates, reverse=True):
                if moment <= at and self.desired(moment) == becomes and \
                        self.desired(moment - timedelta(minutes=1)) != becomes:
                    return moment, becomes  # type: ignore[return-value]
        return None

    def _moment(self, day: date, at: time) -> datetime:
        return datetime.combine(day, at, tzinfo=self.zone)


def parse(text: str) -> Schedule | None:
    """A schedule from its text; None for "off". Raises ValueError naming what is wrong."""
    words = text.split()
    if [w.lower() for w in words] == [OPT_OUT]:
        return None
    if len(words) < 3:
        raise ValueError("expected '<days> <HH:MM>-<HH:MM> <IANA zone> [stop-only] [holidays=YYYY-MM-DD,...]'")
    days, hours, zone_name, *options = words
    opens, closes = _hours(hours)
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {zone_name!r}") from None
    restart, holidays = True, frozenset[date]()
    for option in options:
        if option.lower() == "stop-only":
            restart = False
        elif option.lower().startswith("holidays="):
            try:
                holidays = frozenset(date.fromisoformat(d) for d in option.split("=", 1)[1].split(",") if d)
            except ValueError:
                raise ValueError(f"bad holiday list {option!r}") from None
        else:
            raise ValueError(f"unknown option {option!r}")
    return Schedule(_weekdays(days), opens, closes, zone, restart, holidays)


def _weekdays(text: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.lower().split(","):
        first, _, last = part.partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise ValueError(f"bad weekdays {text!r}")
        a, b = _DAYS.index(first), _DAYS.index(last or first)
        out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(out)


def _hours(text: str) -> tuple[time, time]:
    try:
        opens, closes = (time.fromisoformat(t) for t in text.split("-"))
    except ValueError:
        raise ValueError(f"bad hours {text!r}, expected HH:MM-HH:MM") from None
    if opens >= closes:
        raise ValueError(f"hours {text!r} must open before they close")
    return opens, closes


@dataclass(frozen=True, slots=True)
class ScheduleStep:
    """What the schedule asks for now: `act` is None when nothing is to be done."""

    act: Literal["stop", "start", "wait"] | None
    change_at: datetime | None  # the scheduled change this step handles (record it once acted on)


def step(schedule: Schedule | None, at: datetime, *, running: bool, running_nodes: int | None,
         handled: datetime | None) -> ScheduleStep:
    """The step for the last scheduled change, if it is not handled yet. A stop waits ("wait") while a lab node
    runs or the controller does not answer (running_nodes None with a controller is the caller's to pass as
    unknown); a start happens only with restart. Once handled, a change is never acted on again."""
    if schedule is None:
        return ScheduleStep(None, None)
    change = schedule.last_change(at)
    if change is None or change[0] == handled:
        return ScheduleStep(None, None)
    moment, becomes = change
    if becomes == "down":
        if not running:
            return ScheduleStep(None, moment)  # already down: nothing to do, but the change is handled
        if running_nodes is None or running_nodes > 0:
            return ScheduleStep("wait", None)
        return ScheduleStep("stop", moment)
    if running or not schedule.restart:
        return ScheduleStep(None, moment)
    return ScheduleStep("start", moment)
