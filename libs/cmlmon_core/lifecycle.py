"""Process lifecycle: a stop event set by SIGINT/SIGTERM, waiting that a stop cuts short, running a service
until it stops, and the identity of this replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


def stop_on_signals() -> asyncio.Event:
    """Return an event that is set on SIGINT or SIGTERM; call from inside the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def stopped_within(stop: asyncio.Event, seconds: float, *, wake: asyncio.Event | None = None) -> bool:
    """Wait up to `seconds`, ending early when `stop` (or `wake`, if given) is set; True when stop is set.

    Every long-running loop waits through this, so a stop never waits out a back-off or a period. No waiter is
    left behind, however the wait ends (a leftover waiter per call would pile up in a loop)."""
    waiters = {asyncio.ensure_future(stop.wait())}
    if wake is not None:
        waiters.add(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return stop.is_set()


def replica_id(configured: str = "") -> str:
    return configured or f"{socket.gethostname()}:{os.getpid()}"


async def run_until_stopped(service: Callable[[asyncio.Event], Coroutine[Any, Any, None]], stop: asyncio.Event, *,
                            stop_timeout: float) -> None:
    """Run `service(ready)` until it returns; `stop` is how the caller asks it to finish.

    The service sets `ready` once it has work in flight to protect (connected, serving). A stop before that
    abandons the start at once (NATS may be unreachable and its connect retries forever); a stop after it
    lets the service finish or hand back its in-flight work itself, cancelled only if it takes longer than
    stop_timeout seconds. Exceptions of the service propagate."""
    ready = asyncio.Event()
    task = asyncio.create_task(service(ready))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not task.done() and ready.is_set():
        await asyncio.wait([task], timeout=stop_timeout)
    if not task.done():
        log.warning("stop requested during start-up" if not ready.is_set() else "shutdown took too long; cancelling")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return
    task.result()
