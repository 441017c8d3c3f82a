"""Ticks that arrive spread over the interval are still batched: after the first fetch the consumer keeps
fetching for the gathering window (issue 4, point 2), and never waits longer than that window."""

from __future__ import annotations

import asyncio
from typing import Any

from collector.entrypoints.ticks import TickConsumer, TickOptions


class SpreadTicks:
    """A pull subscription whose ticks become available at given offsets (seconds) from its creation."""

    def __init__(self, arrivals: list[float]) -> None:
        self.arrivals = sorted(arrivals)
        self.start = asyncio.get_running_loop().time()
        self.timeouts: list[float] = []

    def _now(self) -> float:
        return asyncio.get_running_loop().time() - self.start

    async def fetch(self, batch: int, timeout: float) -> list[str]:
        self.timeouts.append(timeout)
        if not self.arrivals or self.arrivals[0] - self._now() > timeout:
            await asyncio.sleep(timeout)
            raise TimeoutError
        await asyncio.sleep(max(0.0, self.arrivals[0] - self._now()))
        ready = [a for a in self.arrivals if a <= self._now()][:batch]
        del self.arrivals[:len(ready)]
        return [f"tick@{a}" for a in ready]


def consumer(gather_seconds: float, fetch_batch: int = 1000) -> TickConsumer:
    none: Any = None
    return TickConsumer(none, none, none, "test", TickOptions(gather_seconds=gather_seconds, fetch_batch=fetch_batch))


async def test_ticks_spread_over_the_window_are_gathered_into_one_batch() -> None:
    psub = SpreadTicks([0.0, 0.1, 0.2, 0.3])
    msgs = await consumer(gather_seconds=1.0)._gather(psub, asyncio.Event())  # type: ignore[arg-type]
    assert [str(m) for m in msgs] == ["tick@0.0", "tick@0.1", "tick@0.2", "tick@0.3"]


async def test_the_gathering_window_bounds_the_wait() -> None:
    psub = SpreadTicks([0.0, 0.05, 60.0])
    msgs = await consumer(gather_seconds=0.3)._gather(psub, asyncio.Event())  # type: ignore[arg-type]
    assert [str(m) for m in msgs] == ["tick@0.0", "tick@0.05"]  # the tick a minute later is the next batch's
    assert all(t <= 0.3 for t in psub.timeouts[1:])


async def test_a_full_batch_is_not_held_for_the_window() -> None:
    psub = SpreadTicks([0.0, 0.0, 0.0, 60.0])
    msgs = await consumer(gather_seconds=30.0, fetch_batch=3)._gather(psub, asyncio.Event())  # type: ignore[arg-type]
    assert len(msgs) == 3
    assert len(psub.timeouts) == 1
