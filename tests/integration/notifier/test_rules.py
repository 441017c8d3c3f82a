"""Every rule end to end: events and samples published as the registry and collector would, alerts read
back from a real webhook receiver."""

from __future__ import annotations

import time
import uuid

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from cml.monitor.v1 import events_pb2, worker_pb2
from cmlmon_core import subjects
from cmlmon_core.messages import encode
from cmlmon_core.topology import METRICS_STREAM, WORKERS_STREAM
from notifier.sink_config import url_sink_name
from tests.integration.notifier.support import (
    drained,
    eventually,
    make_worker,
    notifier_settings,
    publish_event,
    publish_sample,
    receiving,
    running_notifier,
)

pytestmark = pytest.mark.integration
RUNNING, STOPPED, TERMINATED = (worker_pb2.WORKER_STATUS_RUNNING, worker_pb2.WORKER_STATUS_STOPPED,
                                worker_pb2.WORKER_STATUS_TERMINATED)


def seen(receiver: object, worker_id: str) -> list[tuple[str, str]]:
    return [(r.json()["rule"], r.json()["status"]) for r in receiver.for_worker(worker_id)]  # type: ignore[attr-defined]


async def test_lifecycle_rules_fire_only_outside_the_registry(js: JetStreamContext, nats_url: str, uid: str) -> None:
    observed = make_worker(f"o-{uid}")
    requested = make_worker(f"q-{uid}")
    gone = make_worker(f"t-{uid}")
    async with receiving() as receiver:
        settings = notifier_settings(nats_url, uid, worker_notification_webhooks=receiver.url)
        async with running_notifier(settings):
            for w in (observed, requested, gone):
                await publish_event(js, w, "imported")
            stopped = worker_pb2.Worker()
            stopped.CopyFrom(observed)
            stopped.status = STOPPED
            await publish_event(js, stopped, "status_changed", events_pb2.WORKER_EVENT_TYPE_STATUS_CHANGED,
                                requested=False, previous=RUNNING)
            req = worker_pb2.Worker()
            req.CopyFrom(requested)
            req.status = STOPPED
            await publish_event(js, req, "stopped", events_pb2.WORKER_EVENT_TYPE_STOPPED, requested=True,
                                previous=RUNNING)
            term = worker_pb2.Worker()
            term.CopyFrom(gone)
            term.status = TERMINATED
            await publish_event(js, term, "terminated", events_pb2.WORKER_EVENT_TYPE_TERMINATED, requested=False,
                                previous=RUNNING)
            await eventually(lambda: seen(receiver, observed.id) == [("unexpected_stop", "firing")])
            await eventually(lambda: seen(receiver, gone.id) == [("unexpected_termination", "firing")])
            body = receiver.for_worker(observed.id)[0].json()
            assert body["severity"] == "critical" and "outside the registry" in body["summary"]
            await publish_event(js, observed, "started", events_pb2.WORKER_EVENT_TYPE_STARTED, requested=True,
                                previous=STOPPED)
            await eventually(lambda: seen(receiver, observed.id)[-1:] == [("unexpected_stop", "resolved")])
            await drained(js, WORKERS_STREAM, f"notifier-{uid}-workers")
            await drained(js, "CML_ALERTS", f"notifier-{uid}-sink-{url_sink_name('webhook', receiver.url)}")
    assert seen(receiver, requested.id) == []


async def test_tag_threshold_status_check_and_silent_worker(js: JetStreamContext, nats_url: str, uid: str) -> None:
    tagged = make_worker(f"g-{uid}", tags={"cmlmon:cpu-threshold": "80"})
    impaired = make_worker(f"i-{uid}")
    quiet = make_worker(f"s-{uid}", poll_interval=1)
    async with receiving() as receiver:
        settings = notifier_settings(nats_url, uid, worker_notification_webhooks=receiver.url,
                                     alert_silent_intervals=2)
        async with running_notifier(settings):
            for w in (tagged, impaired, quiet):
                await publish_event(js, w, "imported")
            await drained(js, WORKERS_STREAM, f"notifier-{uid}-workers")
            await publish_sample(js, tagged, cpu=85.0)
            await publish_sample(js, impaired, cpu=5.0, system_status_check=worker_pb2.STATUS_CHECK_IMPAIRED,
                                 instance_status_check=worker_pb2.STATUS_CHECK_OK)
            await publish_sample(js, quiet, cpu=5.0)
            got = await eventually(lambda: receiver.for_worker(tagged.id))
            body = got[0].json()
            assert (body["rule"], body["threshold"], body["value"]) == ("cpu_high", 80.0, 85.0)
            await eventually(lambda: seen(receiver, impaired.id) == [("status_check_impaired", "firing")])
            # no sample for 2 intervals of 1 s: silent fires; the next sample resolves it
            await eventually(lambda: seen(receiver, quiet.id) == [("silent", "firing")], timeout=30)
            await publish_sample(js, quiet, cpu=5.0)
            await eventually(lambda: seen(receiver, quiet.id) == [("silent", "firing"), ("silent", "resolved")])
            await publish_sample(js, impaired, cpu=5.0, system_status_check=worker_pb2.STATUS_CHECK_OK,
                                 instance_status_check=worker_pb2.STATUS_CHECK_OK)
            await eventually(lambda: seen(receiver, impaired.id)[-1] == ("status_check_impaired", "resolved"))
            await drained(js, METRICS_STREAM, f"notifier-{uid}")


async def test_undecodable_message_is_terminated_and_consumer_carries_on(js: JetStreamContext, nats_url: str,
                                                                        uid: str) -> None:
    worker = make_worker(f"u-{uid}")
    async with receiving() as receiver:
        settings = notifier_settings(nats_url, uid, worker_notification_webhooks=receiver.url)
        async with running_notifier(settings):
            await js.publish(f"cml.metrics.us-east-1.{worker.id}", b"\xff\xffnot protobuf",
                             headers={"Content-Type": "application/protobuf; proto=cml.monitor.v1.MetricSample"})
            await js.publish(f"cml.metrics.us-east-1.{worker.id}", b"", headers={"Content-Type": "text/plain"})
            await publish_sample(js, worker, cpu=99.0)
            await eventually(lambda: seen(receiver, worker.id) == [("cpu_high", "firing")])
            await drained(js, METRICS_STREAM, f"notifier-{uid}")


async def test_trace_context_flows_from_sample_to_alert(js: JetStreamContext, nc: Client, nats_url: str,
                                                        uid: str) -> None:
    worker = make_worker(f"x-{uid}")
    trace_id = uuid.uuid4().hex
    alerts: list[Msg] = []

    async def on_alert(msg: Msg) -> None:
        alerts.append(msg)

    sub = await nc.subscribe(f"cml.alerts.{worker.id}.*", cb=on_alert)
    async with running_notifier(notifier_settings(nats_url, uid)):
        sample = events_pb2.MetricSample(worker_id=worker.id, region=worker.region, instance_id=worker.instance_id,
                                         cpu_utilization=99.0, status=RUNNING)
        data, headers = encode(sample, headers={"traceparent": f"00-{trace_id}-{'1' * 16}-01"})
        await js.publish(subjects.metric(worker.region, worker.id), data, headers=headers)
        await eventually(lambda: alerts)
    await sub.unsubscribe()
    assert trace_id in (alerts[0].headers or {}).get("traceparent", "")


async def test_stuck_transition_fires_past_the_family_time_and_resolves_when_there(js: JetStreamContext,
                                                                                   nats_url: str, uid: str) -> None:
    stuck = make_worker(f"st-{uid}", status=STOPPED)
    stuck.instance_type = "c5.large"
    stuck.requested_status = RUNNING
    stuck.requested_time.FromSeconds(int(time.time()) - 30)  # asked 30 s ago: past c5's 5 s, within metal's hour
    stuck.state_reason = "Server.InsufficientInstanceCapacity: Insufficient capacity."
    metal = worker_pb2.Worker()
    metal.CopyFrom(stuck)
    metal.id, metal.instance_type = f"sm-{uid}", "c5.metal"
    async with receiving() as receiver:
        settings = notifier_settings(nats_url, uid, worker_notification_webhooks=receiver.url,
                                     stuck_transition_seconds=5, stuck_transition_overrides="metal=3600")
        async with running_notifier(settings):
            await publish_event(js, metal, "started", events_pb2.WORKER_EVENT_TYPE_STARTED)
            await publish_event(js, stuck, "started", events_pb2.WORKER_EVENT_TYPE_STARTED)
            [fired] = await eventually(lambda: receiver.for_worker(stuck.id))
            body = fired.json()
            assert (body["rule"], body["status"], body["severity"]) == ("stuck_transition", "firing", "warning")
            assert "asked to be running" in body["summary"] and "still has it stopped" in body["summary"]
            assert body["summary"].endswith("(AWS: Server.InsufficientInstanceCapacity: Insufficient capacity.)")
            stuck.status = RUNNING
            await publish_event(js, stuck, "status_changed", events_pb2.WORKER_EVENT_TYPE_STATUS_CHANGED,
                                previous=STOPPED)
            await eventually(lambda: len(receiver.for_worker(stuck.id)) == 2)
            # the same sweeps looked at the metal worker, asked as long ago: within its time, nothing
            await drained(js, "CML_ALERTS", f"notifier-{uid}-sink-{url_sink_name('webhook', receiver.url)}")
            assert not receiver.for_worker(metal.id)
            metal.status = TERMINATED  # or, past metal's time, it would be stuck in every later test's notifier
            await publish_event(js, metal, "terminated", events_pb2.WORKER_EVENT_TYPE_TERMINATED, previous=STOPPED)
    assert seen(receiver, stuck.id) == [("stuck_transition", "firing"), ("stuck_transition", "resolved")]
