"""Opsgenie Alert API v2 against a real HTTP receiver standing in for api.opsgenie.com: create with the alert id
as alias, close by alias, the GenieKey header, a 429 honoured, repeated 5xx dead-lettered."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from cmlmon_core.topology import ALERTS_STREAM
from cmlmon_dev.receiver import WebhookReceiver
from notifier.adapters.publisher import DEADLETTER_REASON
from tests.integration.notifier.support import (
    about,
    drained,
    eventually,
    make_worker,
    notifier_settings,
    publish_event,
    publish_sample,
    receiving,
    running_notifier,
    write_sinks_file,
)

pytestmark = pytest.mark.integration
KEY = "0f1e2d3c-opsgenie-test-key"


async def test_opsgenie_create_close_429_and_dead_letter(js: JetStreamContext, nc: Client, nats_url: str, uid: str,
                                                         tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    worker = make_worker(f"og-{uid}", name=f"genie-{uid}")
    dead: list[Msg] = []

    async def on_dead(msg: Msg) -> None:
        dead.append(msg)

    sub = await nc.subscribe(f"cml.deadletter.*.{worker.id}.>", cb=on_dead)
    async with (receiving(WebhookReceiver(responses=[(429, {"Retry-After": "1"})], scripted_for=worker.id)) as genie,
                receiving(WebhookReceiver(responses=[503] * 100)) as broken):
        sinks = write_sinks_file(tmp_path / "sinks.yaml", [
            {"name": "genie-broken", "type": "opsgenie", "url": broken.url, "api_key": "other-key"}])
        settings = notifier_settings(nats_url, uid, opsgenie_api_key=KEY, opsgenie_url=genie.url,
                                     notifier_sinks_file=sinks, delivery_max_attempts=3, log_level="DEBUG")
        async with running_notifier(settings):
            await publish_event(js, worker, "imported")
            await publish_sample(js, worker, cpu=99.0)
            await eventually(lambda: genie.for_worker(worker.id))
            await publish_sample(js, worker, cpu=10.0)
            await eventually(lambda: len(about(genie.received, worker.id)) == 2)
            await eventually(lambda: len(dead) == 2, timeout=30)
            for name in ("opsgenie", "genie-broken"):
                await drained(js, ALERTS_STREAM, f"notifier-{uid}-sink-{name}", timeout=30)
    await sub.unsubscribe()

    alias, base = f"{worker.id}.cpu_high", genie.path  # the base URL override may carry a path of its own
    create, close = about(genie.received, worker.id)
    assert len(genie.rejected) == 1 and genie.rejected[0].path == f"{base}/v2/alerts"  # the 429, then it again
    assert create.path == f"{base}/v2/alerts" and create.headers["Authorization"] == f"GenieKey {KEY}"
    body = create.json()
    assert body["alias"] == alias and body["priority"] == "P3"  # cpu_high is a warning
    assert body["message"] == f"[WARNING] cpu_high on {worker.name}" and "99" in body["description"]
    assert body["entity"] == worker.instance_id and body["source"] == "cmlmon"
    assert {"cmlmon", "cpu_high", "warning"} <= set(body["tags"])
    assert body["details"]["worker_id"] == worker.id and body["details"]["threshold"] == "90"
    assert (close.path, close.query) == (f"{base}/v2/alerts/{alias}/close", "identifierType=alias")
    assert close.headers["Authorization"] == f"GenieKey {KEY}" and close.json()["source"] == "cmlmon"
    # the broken endpoint: each transition tried three times, then dead-lettered with the reason
    assert len(about(broken.rejected, worker.id)) == 6 and not broken.received
    assert all(m.subject.startswith(f"cml.deadletter.genie-broken.{worker.id}.") for m in dead)
    assert all("HTTP 503 after 3 attempt(s)" in (m.headers or {})[DEADLETTER_REASON] for m in dead)
    assert KEY not in caplog.text and "other-key" not in caplog.text
