"""Delivery against real HTTP receivers: signed webhooks, retries, Retry-After, 410, a receiver down
throughout, each sink on its own durable consumer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from cml.monitor.v1 import alert_pb2
from cmlmon_core.messages import decode
from cmlmon_core.topology import ALERTS_STREAM
from cmlmon_dev.receiver import WebhookReceiver
from cmlmon_dev.servers import free_port
from notifier.adapters.publisher import DEADLETTER_REASON
from tests.integration.notifier.support import (
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
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def test_sinks_retry_dead_letter_and_stay_independent(js: JetStreamContext, nc: Client, nats_url: str,
                                                             uid: str, tmp_path: Path) -> None:
    worker = make_worker(f"d-{uid}")
    dead: list[Msg] = []

    async def on_dead(msg: Msg) -> None:
        dead.append(msg)

    sub = await nc.subscribe(f"cml.deadletter.*.{worker.id}.>", cb=on_dead)
    down_url = f"http://127.0.0.1:{free_port()}/nobody-home"
    async with (receiving(WebhookReceiver(secret=SECRET)) as signed,
                receiving(WebhookReceiver(responses=[503, 500], scripted_for=worker.id)) as flaky,
                receiving(WebhookReceiver(responses=[(429, {"Retry-After": "1"})], scripted_for=worker.id)) as limited,
                receiving(WebhookReceiver(responses=[410] * 100)) as gone):
        sinks = write_sinks_file(tmp_path / "sinks.yaml", [
            {"name": "signed", "type": "webhook", "url": signed.url, "secret": SECRET},
            {"name": "flaky", "type": "webhook", "url": flaky.url},
            {"name": "limited", "type": "webhook", "url": limited.url},
            {"name": "gone", "type": "webhook", "url": gone.url},
            {"name": "down", "type": "webhook", "url": down_url, "timeout_seconds": 0.5},
        ])
        settings = notifier_settings(nats_url, uid, notifier_sinks_file=sinks, delivery_max_attempts=3)
        async with running_notifier(settings):
            await publish_event(js, worker, "imported")
            await publish_sample(js, worker, cpu=99.0)
            firing = await eventually(lambda: signed.for_worker(worker.id))
            await eventually(lambda: flaky.for_worker(worker.id))
            await eventually(lambda: limited.for_worker(worker.id))
            await publish_sample(js, worker, cpu=10.0)
            await eventually(lambda: len(signed.for_worker(worker.id)) == 2)
            await eventually(lambda: len(flaky.for_worker(worker.id)) == 2)
            await eventually(lambda: len([m for m in dead if ".down." in m.subject]) == 2, timeout=30)
            await eventually(lambda: len([m for m in dead if ".gone." in m.subject]) == 2, timeout=30)
            for name in ("signed", "flaky", "limited", "down", "gone"):
                await drained(js, ALERTS_STREAM, f"notifier-{uid}-sink-{name}", timeout=30)

    await sub.unsubscribe()
    statuses = [r.json()["status"] for r in signed.for_worker(worker.id)]
    assert statuses == ["firing", "resolved"]
    assert not signed.rejected, "every signature verified"
    assert firing[0].headers["webhook-id"] == firing[0].json()["transition_id"]
    # flaky: two failures, then success; each transition received exactly once
    assert [r.json()["status"] for r in flaky.for_worker(worker.id)] == ["firing", "resolved"]
    assert len(flaky.rejected) == 2
    # the 429 delayed, did not lose
    assert [r.json()["status"] for r in limited.for_worker(worker.id)] == ["firing", "resolved"]
    # down throughout: both transitions dead-lettered with the reason
    down_dead = [m for m in dead if m.subject.startswith(f"cml.deadletter.down.{worker.id}.")]
    assert len(down_dead) == 2
    assert all("after 3 attempt(s)" in (m.headers or {})[DEADLETTER_REASON] for m in down_dead)
    alert = decode(alert_pb2.Alert, down_dead[0].data, down_dead[0].headers)
    assert alert.worker_id == worker.id and alert.rule == "cpu_high"
    # 410: the endpoint is disabled, the rest is dead-lettered without calling it again
    assert not gone.for_worker(worker.id)
    gone_reasons = [(m.headers or {})[DEADLETTER_REASON] for m in dead if ".gone." in m.subject]
    assert any("410" in r for r in gone_reasons)


async def test_restart_and_two_replicas_never_fire_twice(js: JetStreamContext, nats_url: str, uid: str) -> None:
    worker = make_worker(f"r-{uid}")
    async with receiving() as receiver:
        settings = notifier_settings(nats_url, uid, worker_notification_webhooks=receiver.url)
        async with running_notifier(settings), running_notifier(settings):
            await publish_event(js, worker, "imported")
            for _ in range(6):
                await publish_sample(js, worker, memory=96.0)
            await eventually(lambda: receiver.for_worker(worker.id))
            await drained(js, "CML_METRICS", f"notifier-{uid}")
        async with running_notifier(settings):  # restarted: remembers the alert and the worker's name
            for _ in range(3):
                await publish_sample(js, worker, memory=97.0)
            await publish_sample(js, worker, memory=97.0, cpu=99.0)
            cpu = await eventually(
                lambda: [r.json() for r in receiver.for_worker(worker.id) if r.json()["rule"] == "cpu_high"])
            assert cpu[0]["worker_name"] == worker.name and cpu[0]["status"] == "firing"
            await drained(js, "CML_METRICS", f"notifier-{uid}")
            await publish_sample(js, worker, memory=50.0)
            # the memory firing and the cpu firing are in already: wait for the resolution itself, or the
            # notifier may stop before its sink has delivered it
            await eventually(lambda: ("memory_high", "resolved") in [
                (r.json()["rule"], r.json()["status"]) for r in receiver.for_worker(worker.id)])
            await drained(js, "CML_METRICS", f"notifier-{uid}")
        kv = await js.key_value("cml_alerts")
        state = await kv.get(f"{worker.id}.memory_high")
    bodies = [r.json() for r in receiver.for_worker(worker.id) if r.json()["rule"] == "memory_high"]
    assert [(b["rule"], b["status"]) for b in bodies] == [("memory_high", "firing"), ("memory_high", "resolved")]
    assert len({b["transition_id"] for b in bodies}) == 2
    assert b'"phase":"inactive"' in (state.value or b"")


async def test_stop_hands_in_flight_delivery_back(js: JetStreamContext, nats_url: str, uid: str) -> None:
    worker = make_worker(f"h-{uid}")
    async with receiving(WebhookReceiver(responses=[503] * 1000)) as receiver:
        settings = notifier_settings(nats_url, uid, worker_notification_webhooks=receiver.url,
                                     delivery_max_attempts=50, delivery_backoff_initial_seconds=0.2)
        async with running_notifier(settings):
            await publish_sample(js, worker, cpu=99.0)
            await eventually(lambda: any(worker.id in r.body.decode() for r in receiver.rejected))
        # stopped while retrying: the transition was handed back, not acknowledged nor lost
        receiver.responses.clear()
        async with running_notifier(settings):
            got = await eventually(lambda: receiver.for_worker(worker.id), timeout=15)
    assert [r.json()["status"] for r in got] == ["firing"]


async def test_hanging_sink_delays_neither_evaluation_nor_other_sinks(js: JetStreamContext, nats_url: str,
                                                                     uid: str, tmp_path: Path) -> None:
    first, second = make_worker(f"s1-{uid}"), make_worker(f"s2-{uid}")
    gate = asyncio.Event()
    async with receiving() as fast, receiving(WebhookReceiver(gate=gate)) as hanging:
        sinks = write_sinks_file(tmp_path / "sinks.yaml", [
            {"name": "fast", "type": "webhook", "url": fast.url},
            {"name": "hanging", "type": "webhook", "url": hanging.url, "timeout_seconds": 60},
        ])
        async with running_notifier(notifier_settings(nats_url, uid, notifier_sinks_file=sinks)):
            await publish_sample(js, first, cpu=99.0)
            await eventually(lambda: fast.for_worker(first.id))
            await eventually(lambda: hanging.waiting >= 1)  # the hanging sink holds its delivery...
            await publish_sample(js, second, memory=99.0)  # ...while evaluation and the other sink go on
            await eventually(lambda: fast.for_worker(second.id))
            assert not hanging.for_worker(first.id)
            gate.set()
            await eventually(lambda: hanging.for_worker(first.id) and hanging.for_worker(second.id))
