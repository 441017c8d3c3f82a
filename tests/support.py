"""Helpers every kind of test shares."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
                     retrying: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll check (sync or async) until it returns something truthy and return that; fail at the deadline
    with the last value seen. A check that raises one of `retrying` (a read that could not be answered for the
    moment) counts as "not yet"; the last such error is named if the deadline passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    error: BaseException | None = None
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except retrying as exc:
            value, error = None, exc
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r}"
                                 + (f"; last error {error!r})" if error is not None else ")"))
        await asyncio.sleep(interval)
