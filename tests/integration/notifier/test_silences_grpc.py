"""AlertService over real gRPC: alerts listed, silences created/listed/deleted, a silenced alert delivered
when its silence ends while it still fires; reflection and health served."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from nats.js import JetStreamContext

from cml.monitor.v1 import alert_pb2, alert_pb2_grpc
from cmlmon_core.topology import ALERTS_STREAM, METRICS_STREAM
from cmlmon_dev.servers import free_port
from notifier.sink_config import url_sink_name
from tests.integration.notifier.support import (
    about,
    drained,
    eventually,
    make_worker,
    notifier_settings,
    publish_sample,
    receiving,
    running_notifier,
)

pytestmark = pytest.mark.integration


def at(offset: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int((time.time() + offset) * 1e9))
    return ts


async def test_silence_holds_delivery_until_it_ends(js: JetStreamContext, nats_url: str, uid: str) -> None:
    worker = make_worker(f"q-{uid}")
    other = make_worker(f"p-{uid}")
    port = free_port()
    async with receiving() as receiver:
        settings = notifier_settings(nats_url, uid, worker_notification_webhooks=receiver.url, grpc_port=port)
        sink_durable = f"notifier-{uid}-sink-{url_sink_name('webhook', receiver.url)}"
        async with running_notifier(settings), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = alert_pb2_grpc.AlertServiceStub(channel)
            created = await stub.CreateSilence(alert_pb2.CreateSilenceRequest(
                worker_id=worker.id, end_time=at(600), comment="maintenance", created_by="test"))
            short = await stub.CreateSilence(alert_pb2.CreateSilenceRequest(
                worker_id=other.id, rule="cpu_high", end_time=at(2.0), comment="short"))
            listed = await stub.ListSilences(alert_pb2.ListSilencesRequest())
            assert {created.silence.id, short.silence.id} <= {s.id for s in listed.silences}

            await publish_sample(js, worker, cpu=99.0)
            await publish_sample(js, other, cpu=99.0)
            await drained(js, METRICS_STREAM, f"notifier-{uid}")
            await drained(js, ALERTS_STREAM, sink_durable)
            alerts = await stub.ListAlerts(alert_pb2.ListAlertsRequest(worker_id=worker.id))
            assert [(a.rule, a.state, a.silenced) for a in alerts.alerts] == [
                ("cpu_high", alert_pb2.ALERT_STATE_FIRING, True)]
            assert not receiver.for_worker(worker.id)  # recorded, not delivered

            # the short silence expires while its alert still fires: delivered then, once
            got = await eventually(lambda: receiver.for_worker(other.id), timeout=30)
            assert got[0].json()["status"] == "firing"

            await stub.DeleteSilence(alert_pb2.DeleteSilenceRequest(id=created.silence.id))
            got = await eventually(lambda: receiver.for_worker(worker.id))
            assert [r.json()["status"] for r in got] == ["firing"]
            alerts = await stub.ListAlerts(alert_pb2.ListAlertsRequest(worker_id=worker.id, rule="cpu_high"))
            assert [a.silenced for a in alerts.alerts] == [False]
            listed = await stub.ListSilences(alert_pb2.ListSilencesRequest())
            assert created.silence.id not in {s.id for s in listed.silences}
            assert short.silence.id not in {s.id for s in listed.silences}

            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.DeleteSilence(alert_pb2.DeleteSilenceRequest(id="no-such-silence"))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            for bad in (alert_pb2.CreateSilenceRequest(end_time=at(60)),
                        alert_pb2.CreateSilenceRequest(worker_id=worker.id, end_time=at(-1)),
                        alert_pb2.CreateSilenceRequest(worker_id=worker.id, end_time=Timestamp(seconds=10**15))):
                with pytest.raises(grpc.aio.AioRpcError) as invalid:
                    await stub.CreateSilence(bad)
                assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="cml.monitor.v1.AlertService"))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = [s.name async for r in responses for s in r.list_services_response.service]
            assert "cml.monitor.v1.AlertService" in names
        assert len(receiver.for_worker(other.id)) == 1


async def test_resolution_reaches_the_incident_tools_despite_a_silence_begun_after_the_firing(
        js: JetStreamContext, nats_url: str, uid: str) -> None:
    worker = make_worker(f"rz-{uid}")
    port = free_port()
    async with receiving() as pagerduty, receiving() as opsgenie:
        settings = notifier_settings(nats_url, uid, grpc_port=port, pagerduty_routing_key="R0UT1NG",
                                     pagerduty_url=pagerduty.url, opsgenie_api_key="genie-key",
                                     opsgenie_url=opsgenie.url)
        async with running_notifier(settings), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = alert_pb2_grpc.AlertServiceStub(channel)
            await publish_sample(js, worker, cpu=99.0)
            await eventually(lambda: pagerduty.for_worker(worker.id) and about(opsgenie.received, worker.id))
            await stub.CreateSilence(alert_pb2.CreateSilenceRequest(
                worker_id=worker.id, end_time=at(600), comment="maintenance began after the page"))
            # the CPU alert resolves while the silence holds; a memory alert fires under it (and is held back)
            await publish_sample(js, worker, cpu=5.0, memory=99.0)
            await eventually(lambda: len(pagerduty.for_worker(worker.id)) == 2, timeout=30)
            await eventually(lambda: len(about(opsgenie.received, worker.id)) == 2, timeout=30)
            await drained(js, ALERTS_STREAM, f"notifier-{uid}-sink-pagerduty")
            await drained(js, ALERTS_STREAM, f"notifier-{uid}-sink-opsgenie")
            alerts = await stub.ListAlerts(alert_pb2.ListAlertsRequest(worker_id=worker.id))
            assert [(a.rule, a.silenced) for a in alerts.alerts] == [("memory_high", True)]
    pages = [r.json() for r in pagerduty.for_worker(worker.id)]
    assert [(p["event_action"], p["dedup_key"]) for p in pages] == [
        ("trigger", f"cmlmon/{worker.id}.cpu_high"), ("resolve", f"cmlmon/{worker.id}.cpu_high")]
    create, close = about(opsgenie.received, worker.id)
    assert create.json()["alias"] == f"{worker.id}.cpu_high"
    assert close.path.endswith(f"/v2/alerts/{worker.id}.cpu_high/close")
