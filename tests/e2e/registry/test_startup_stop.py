"""SIGTERM while the registry is still starting (NATS unreachable, so connect retries forever) ends the process
at once with exit code 0, instead of leaving it to hang until an orchestrator kills it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from cmlmon_dev.servers import free_port
from tests.e2e.conftest import ServiceProcess

pytestmark = pytest.mark.e2e


async def test_sigterm_while_nats_is_unreachable_exits_cleanly(launch: Callable[..., ServiceProcess]) -> None:
    registry = launch(free_port(), NATS_URL=f"nats://127.0.0.1:{free_port()}")
    deadline = time.monotonic() + 30
    while "nats error" not in registry.log():  # stuck connecting, as when NATS is down
        assert registry.process.poll() is None, registry.log()
        assert time.monotonic() < deadline, registry.log()
        await asyncio.sleep(0.1)
    # stop() sends SIGTERM and kills only after 20 s: a killed process would not exit 0
    assert await asyncio.to_thread(registry.stop) == 0, registry.log()
    assert "stop requested during start-up" in registry.log()
