"""Process lifecycle: a stop event set by SIGINT/SIGTERM, and the identity of this replica."""

from __future__ import annotations

import asyncio
import os
import signal
import socket


def stop_on_signals() -> asyncio.Event:
    """Return an event that is set on SIGINT or SIGTERM; call from inside the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def replica_id(configured: str = "") -> str:
    return configured or f"{socket.gethostname()}:{os.getpid()}"
