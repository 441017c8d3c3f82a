"""What the collector's /readyz answers: connected to NATS, not stopping, and bound to every durable."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

from collector.entrypoints.main import Readiness


@dataclass
class Connection:  # the one attribute Readiness reads of a nats Client
    is_connected: bool = True


def test_ready_only_when_connected_not_stopping_and_every_consumer_bound() -> None:
    stop = asyncio.Event()
    ticks, events = asyncio.Event(), asyncio.Event()
    readiness = Readiness(stop)
    assert not readiness()  # not connected yet
    conn = Connection()
    readiness.nc = cast(Any, conn)
    readiness.consumers = [ticks, events]
    assert not readiness()
    ticks.set()
    assert not readiness()
    events.set()
    assert readiness()
    conn.is_connected = False
    assert not readiness()
    conn.is_connected = True
    stop.set()
    assert not readiness()
