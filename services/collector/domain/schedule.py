"""How a worker's poll interval is written as a JetStream schedule.

`@every <n>s` fires n seconds after the schedule was written, so workers created at different times tick at
different moments and a short gathering window batches only a few of them. An interval that divides a minute,
an hour or a day is written as a cron expression instead (seconds first): it fires on wall-clock boundaries,
so every worker with that interval ticks in the same second and one fetch batches them all. Other intervals
keep `@every`."""

from __future__ import annotations

SECONDS_PER_MINUTE = 60
SECONDS_PER_HOUR = 3600
SECONDS_PER_DAY = 86_400


def schedule_expression(interval_seconds: int) -> str:
    if interval_seconds < 1:
        raise ValueError("a schedule needs an interval of at least one second")
    n = interval_seconds
    if n < SECONDS_PER_MINUTE and SECONDS_PER_MINUTE % n == 0:
        return "* * * * * *" if n == 1 else f"*/{n} * * * * *"
    if n % SECONDS_PER_MINUTE == 0 and n < SECONDS_PER_HOUR and SECONDS_PER_HOUR % n == 0:
        minutes = n // SECONDS_PER_MINUTE
        return "0 * * * * *" if minutes == 1 else f"0 */{minutes} * * * *"
    if n % SECONDS_PER_HOUR == 0 and n < SECONDS_PER_DAY and SECONDS_PER_DAY % n == 0:
        hours = n // SECONDS_PER_HOUR
        return "0 0 * * * *" if hours == 1 else f"0 0 */{hours} * * *"
    if n == SECONDS_PER_DAY:
        return "0 0 0 * * *"
    return f"@every {n}s"
