"""The collector's probes, against `python -m collector` as Kubernetes runs it: /healthz answers from the
start, /readyz only while the replica is connected to NATS and bound to its durable consumers."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import nats

from cmlmon_core.topology import WORKERS_STREAM
from cmlmon_dev.servers import NatsServer, free_port
from collector.adapters import leases
from collector.entrypoints import worker_events
from tests.e2e.conftest import ServiceProcess
from tests.support import eventually


async def status(client: httpx.AsyncClient, path: str) -> int | None:
    try:
        return (await client.get(path)).status_code
    except httpx.TransportError:
        return None


async def test_live_from_the_start_ready_only_while_connected_and_consuming(tmp_path: Path,
                                                                            aws_endpoint: str) -> None:
    nats_port, health_port = free_port(), free_port()
    env = {**os.environ, "NATS_URL": f"nats://127.0.0.1:{nats_port}", "HEALTH_PORT": str(health_port),
           "METRICS_PORT": "0", "METRICS_HOST": "127.0.0.1", "AWS_ENDPOINT_URL": aws_endpoint,
           "REGISTRY_ADDRESS": f"127.0.0.1:{free_port()}", "RECONCILE_INTERVAL_SECONDS": "0",
           "SHUTDOWN_GRACE_SECONDS": "1"}
    collector = ServiceProcess("collector", env, tmp_path / "collector.log")
    server = NatsServer(tmp_path / "jetstream", port=nats_port, log_file=tmp_path / "nats-server.log")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{health_port}", timeout=2.0) as client:
            await eventually(lambda: status(client, "/healthz"), timeout=30)
            # No NATS yet: alive (a restart would not help), but not ready.
            assert await status(client, "/healthz") == 200
            assert await status(client, "/readyz") == 503
            assert await status(client, "/metrics") == 404

            server.start()
            await eventually(lambda: _ready(client), timeout=30)
            async with await nats.connect(server.url) as nc:  # ready: bound, and keeping region leases
                js = nc.jetstream()
                assert (await js.stream_info(f"KV_{leases.BUCKET}")).config.name == f"KV_{leases.BUCKET}"
                assert (await js.consumer_info(WORKERS_STREAM, worker_events.DURABLE)).name == worker_events.DURABLE

            server.stop()  # NATS goes away: not ready, still alive (it reconnects by itself)
            await eventually(lambda: _status_is(client, "/readyz", 503), timeout=30)
            assert await status(client, "/healthz") == 200

            server.start()
            await eventually(lambda: _ready(client), timeout=30)
        assert collector.stop() == 0
    finally:
        collector.kill()
        server.stop()
        print(f"----- collector log -----\n{collector.log()}")


async def _status_is(client: httpx.AsyncClient, path: str, code: int) -> bool:
    return await status(client, path) == code


async def _ready(client: httpx.AsyncClient) -> bool:
    return await _status_is(client, "/readyz", 200)
