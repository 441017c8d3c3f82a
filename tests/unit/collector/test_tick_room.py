"""TickConsumer's back-pressure: at max_in_flight it fetches nothing until a poll finishes or a stop comes,
and the wait leaves no task behind."""

from __future__ import annotations

import asyncio
from typing import Any

from collector.entrypoints.ticks import TickConsumer, TickOptions


def consumer(max_in_flight: int) -> TickConsumer:
    none: Any = None
    return TickConsumer(none, none, none, none, "test", TickOptions(max_in_flight=max_in_flight))


def others() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def test_a_full_consumer_waits_for_room_and_leaves_no_task_behind() -> None:
    c = consumer(max_in_flight=2)
    c._track(2)
    stop = asyncio.Event()
    waiting = asyncio.create_task(c._wait_for_room(stop))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    c._track(-1)  # a region's poll finished
    await asyncio.wait_for(waiting, 5)
    await asyncio.sleep(0)
    assert others() == set()


async def test_a_stop_ends_the_wait_for_room_and_leaves_no_task_behind() -> None:
    c = consumer(max_in_flight=1)
    c._track(1)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    await asyncio.wait_for(c._wait_for_room(stop), 5)
    await asyncio.sleep(0)
    assert others() == set()
