"""`python -m notifier` as deployed: a separate process, settings from the environment. Killed with SIGKILL
while an alert fires and started again, it neither re-fires nor forgets; SIGTERM ends it with exit code 0."""

from __future__ import annotations

import grpc
import nats
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cml.monitor.v1 import alert_pb2, alert_pb2_grpc
from cmlmon_core.topology import METRICS_STREAM, ensure_topology
from cmlmon_dev.receiver import WebhookReceiver
from cmlmon_dev.servers import NatsServer, free_port, wait_for_port
from tests.e2e.conftest import ServiceLauncher
from tests.integration.notifier.support import (
    drained,
    eventually,
    make_worker,
    publish_event,
    publish_sample,
    receiving,
)

pytestmark = pytest.mark.e2e
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def serving(port: int) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def test_process_survives_kill_without_double_firing(services: ServiceLauncher, own_nats: NatsServer,
                                                           uid: str) -> None:
    nc = await nats.connect(own_nats.url)
    js = nc.jetstream()
    await ensure_topology(js)
    worker = make_worker(f"e-{uid}", name=f"e2e-{uid}")
    port = free_port()
    try:
        async with receiving(WebhookReceiver(secret=SECRET)) as receiver:
            env = {"WORKER_NOTIFICATION_WEBHOOKS": receiver.url, "WEBHOOK_SECRET": SECRET, "GRPC_PORT": port,
                   "ALERT_FOR_SECONDS": 0, "ALERT_MIN_SAMPLES": 1, "ALERT_WINDOW_SAMPLES": 1}
            first = services.start("notifier", **env)
            wait_for_port(port, timeout=30)
            await publish_event(js, worker, "imported")
            await publish_sample(js, worker, cpu=99.0)
            got = await eventually(lambda: receiver.for_worker(worker.id), timeout=30)
            assert got[0].json()["status"] == "firing" and got[0].json()["worker_name"] == worker.name
            await drained(js, METRICS_STREAM, "notifier")
            first.kill()

            second = services.start("notifier", **env)
            wait_for_port(port, timeout=30)
            assert await serving(port)
            for _ in range(3):
                await publish_sample(js, worker, cpu=98.0)
            await drained(js, METRICS_STREAM, "notifier")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                listed = await alert_pb2_grpc.AlertServiceStub(channel).ListAlerts(
                    alert_pb2.ListAlertsRequest(worker_id=worker.id))
            assert [(a.rule, a.state) for a in listed.alerts] == [("cpu_high", alert_pb2.ALERT_STATE_FIRING)]
            await publish_sample(js, worker, cpu=5.0)
            await eventually(lambda: len(receiver.for_worker(worker.id)) == 2, timeout=30)
            assert second.stop() == 0
        assert [r.json()["status"] for r in receiver.for_worker(worker.id)] == ["firing", "resolved"]
        assert not receiver.rejected, "every delivery carried a valid Standard Webhooks signature"
        assert receiver.url not in second.log() and "secret-token" not in second.log()
    finally:
        await nc.drain()


async def test_sigterm_while_nats_is_unreachable_exits_cleanly(services: ServiceLauncher) -> None:
    proc = services.start("notifier", NATS_URL=f"nats://127.0.0.1:{free_port()}", GRPC_PORT=0)
    await eventually(lambda: "nats error" in proc.log(), timeout=30)  # stuck connecting, as when NATS is down
    assert proc.stop(timeout=15) == 0
    assert "stop requested during start-up" in proc.log()
