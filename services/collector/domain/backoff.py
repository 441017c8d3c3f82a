"""Retry timing: capped exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff
And Jitter"), as a pure function so it is tested without sleeping."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number `attempt` (1 = first retry): uniform in [0, min(cap, base*2^(n-1))]."""
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 30))
    return ceiling * rand()
