"""The NATS connection every service opens: reconnects forever, logs its state changes, drains on close."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
from nats.aio.client import Client

from cmlmon_core.settings import CommonSettings

log = logging.getLogger(__name__)


@asynccontextmanager
async def connect(settings: CommonSettings, name: str) -> AsyncIterator[Client]:
    """Connect to NATS; on exit drain (finish in-flight handlers, flush publishes) and close."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats error", extra={"error": repr(exc)})

    async def on_disconnect() -> None:
        log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    nc = await nats.connect(
        servers=settings.nats_servers,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )
    try:
        yield nc
    finally:
        if not nc.is_closed:
            try:
                await nc.drain()
            except Exception as exc:  # closing anyway; a failed drain must not hide the original error
                log.warning("nats drain failed", extra={"error": repr(exc)})
                await nc.close()
