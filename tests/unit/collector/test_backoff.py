from __future__ import annotations

import pytest

from collector.domain.backoff import backoff_delay


def test_ceiling_doubles_then_caps() -> None:
    ceilings = [backoff_delay(n, base=0.2, cap=5.0, rand=lambda: 1.0) for n in range(1, 10)]
    assert ceilings[:5] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2])
    assert ceilings[5:] == [5.0] * 4


def test_full_jitter_spans_zero_to_ceiling() -> None:
    assert backoff_delay(3, base=1.0, cap=10.0, rand=lambda: 0.0) == 0.0
    assert backoff_delay(3, base=1.0, cap=10.0, rand=lambda: 0.5) == 2.0


def test_huge_attempt_numbers_stay_capped() -> None:
    assert backoff_delay(10_000, base=1.0, cap=7.0, rand=lambda: 1.0) == 7.0


def test_attempt_starts_at_one() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0, base=1.0, cap=1.0)
