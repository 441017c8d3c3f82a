from __future__ import annotations

import pytest

from collector.domain.schedule import schedule_expression


@pytest.mark.parametrize(("interval", "expression"), [
    (1, "* * * * * *"), (2, "*/2 * * * * *"), (10, "*/10 * * * * *"), (30, "*/30 * * * * *"),
    (60, "0 * * * * *"), (120, "0 */2 * * * *"), (300, "0 */5 * * * *"), (1800, "0 */30 * * * *"),
    (3600, "0 0 * * * *"), (7200, "0 0 */2 * * *"), (43_200, "0 0 */12 * * *"), (86_400, "0 0 0 * * *"),
])
def test_intervals_that_divide_a_minute_hour_or_day_align_to_the_clock(interval: int, expression: str) -> None:
    assert schedule_expression(interval) == expression


@pytest.mark.parametrize("interval", [7, 45, 90, 420, 5400, 36_000, 100_000])
def test_other_intervals_run_every_n_seconds(interval: int) -> None:
    assert schedule_expression(interval) == f"@every {interval}s"


def test_zero_is_refused() -> None:
    with pytest.raises(ValueError):
        schedule_expression(0)
