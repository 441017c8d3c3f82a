"""The autopilot as NATS user `autopilot` of deploy/nats/cmlmon-accounts.conf (what the Kubernetes manifests
and the Helm values configure): it can create or check the topology, bind its samples' durable, keep its state
by compare-and-set and publish its decisions and alerts; and it is refused what it has no business doing."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import pytest
from nats.errors import Error as NatsError

from autopilot.adapters.publisher import JetStreamDecisionPublisher
from autopilot.adapters.state_kv import KvStateStore
from autopilot.domain.autostop import PilotState
from autopilot.entrypoints.main import serve
from autopilot.settings import AutopilotSettings
from cml.monitor.v1 import alert_pb2, events_pb2
from cmlmon_core.nats_conn import connect
from cmlmon_dev.servers import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[3]
USERS = ("registry", "collector", "notifier", "autopilot")


@pytest.fixture
def secured_nats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NatsServer:
    shutil.copy(ROOT / "deploy" / "nats" / "cmlmon-accounts.conf", tmp_path / "cmlmon-accounts.conf")
    config = tmp_path / "nats-server.conf"
    config.write_text("include ./cmlmon-accounts.conf\n")
    for user in USERS:  # the server reads its users' passwords from its environment
        monkeypatch.setenv(f"CMLMON_{user.upper()}_NATS_PASSWORD", f"pw-{user}")
    return NatsServer(tmp_path / "jetstream", log_file=tmp_path / "nats-server.log", config_file=config)


def as_autopilot(server: NatsServer, password_file: Path) -> AutopilotSettings:
    return AutopilotSettings(nats_url=server.url, nats_user="autopilot", nats_password=password_file.read_text(),
                             nats_inbox_prefix="_INBOX.autopilot", metrics_port=0, log_format="text",
                             registry_address=f"127.0.0.1:{free_port()}", autostop_mode="dry-run")


async def test_the_autopilot_user_may_do_its_work_and_no_more(secured_nats: NatsServer, tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("pw-autopilot")
    settings = as_autopilot(secured_nats, password)
    with secured_nats:
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(serve(settings, stop, ready))  # topology, state bucket, durable
        try:
            await asyncio.wait_for(ready.wait(), 60)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)

        async with connect(settings, "autopilot-test") as nc:
            js = nc.jetstream()
            store = await KvStateStore.open(js)
            worker_id = f"w-{uuid.uuid4().hex[:8]}"
            await store.put(worker_id, PilotState(), 0)
            assert (await store.get(worker_id))[1] > 0
            decision_id = uuid.uuid4().hex
            await JetStreamDecisionPublisher(js).publish(
                events_pb2.AutopilotDecision(decision_id=decision_id, worker_id=worker_id, action="would_stop",
                                             mode="dry-run"),
                alert_pb2.Alert(id=f"{worker_id}/autostop", worker_id=worker_id, rule="autostop",
                                transition_id=decision_id))
            with pytest.raises(NatsError):  # a lifecycle event is the registry's to publish
                await js.publish("cml.workers.us-east-1.created", b"{}", timeout=2)
            with pytest.raises(NatsError):  # and the topology is never deleted
                await js.delete_stream("CML_AUTOPILOT")
