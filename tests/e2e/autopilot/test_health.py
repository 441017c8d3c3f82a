"""The autopilot's probes, against `python -m autopilot` as Kubernetes runs it: /healthz answers from the start,
/readyz only once the replica is connected to NATS and bound to its samples' durable."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import nats

from cmlmon_core.topology import METRICS_STREAM
from cmlmon_dev.servers import NatsServer, free_port
from tests.e2e.conftest import ServiceProcess
from tests.support import eventually


async def status(client: httpx.AsyncClient, path: str) -> int | None:
    try:
        return (await client.get(path)).status_code
    except httpx.TransportError:
        return None


async def test_live_from_the_start_ready_once_connected_and_consuming(tmp_path: Path) -> None:
    nats_port, health_port = free_port(), free_port()
    durable = f"autopilot-health-{os.getpid()}"
    env = {**os.environ, "NATS_URL": f"nats://127.0.0.1:{nats_port}", "HEALTH_PORT": str(health_port),
           "METRICS_PORT": "0", "METRICS_HOST": "127.0.0.1", "REGISTRY_ADDRESS": f"127.0.0.1:{free_port()}",
           "AUTOPILOT_CONSUMER_NAME": durable, "AUTOSTOP_MODE": "dry-run", "SHUTDOWN_GRACE_SECONDS": "1"}
    autopilot = ServiceProcess("autopilot", env, tmp_path / "autopilot.log")
    server = NatsServer(tmp_path / "jetstream", port=nats_port, log_file=tmp_path / "nats-server.log")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{health_port}", timeout=2.0) as client:
            await eventually(lambda: status(client, "/healthz"), timeout=60)
            # No NATS yet: alive (a restart would not help), but not ready.
            assert await status(client, "/healthz") == 200
            assert await status(client, "/readyz") == 503

            server.start()
            await eventually(lambda: _ready(client), timeout=60)
            async with await nats.connect(server.url) as nc:  # ready means bound: the durable exists
                assert (await nc.jetstream().consumer_info(METRICS_STREAM, durable)).name == durable
        assert autopilot.stop() == 0
    finally:
        autopilot.kill()
        server.stop()
        print(f"----- autopilot log -----\n{autopilot.log()}")


async def _ready(client: httpx.AsyncClient) -> bool:
    return await status(client, "/readyz") == 200
