"""Remediation end to end against moto through a counting proxy (the registry's and the autopilot's AWS calls go
through it, so the test sees exactly which EC2 calls were made). moto always reports status checks "ok", so the
test plays the collector and publishes samples carrying impaired checks; the EC2 actions are real moto calls
made by the registry on the autopilot's RebootWorker / StopWorker / StartWorker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aioboto3
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from autopilot.adapters.state_kv import KvStateStore
from cml.monitor.v1 import alert_pb2, events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_core import messages, subjects
from cmlmon_dev.aws_proxy import CountingAwsProxy
from tests.integration.autopilot.conftest import BASE, REGION, Decisions, Fleet, autopilot_settings, running_autopilots
from tests.integration.registry.conftest import registry_settings, running_registry
from tests.support import eventually

pytestmark = pytest.mark.integration

W = worker_pb2
OK, IMPAIRED, INIT = W.STATUS_CHECK_OK, W.STATUS_CHECK_IMPAIRED, W.STATUS_CHECK_INITIALIZING


@dataclass
class Healing:
    fleet: Fleet
    aws: CountingAwsProxy
    alerts: list[alert_pb2.Alert] = field(default_factory=list)

    async def sample(self, worker: W.Worker, minute: float, system: int = OK, instance: int = OK,
                     status: int = W.WORKER_STATUS_RUNNING) -> None:
        when = Timestamp()
        when.FromDatetime(BASE + timedelta(minutes=minute))
        sample = events_pb2.MetricSample(worker_id=worker.id, region=REGION, instance_id=worker.instance_id,
                                         observe_time=when, status=status,  # type: ignore[arg-type]
                                         system_status_check=system,  # type: ignore[arg-type]
                                         instance_status_check=instance)  # type: ignore[arg-type]
        data, headers = messages.encode(sample, msg_id=uuid.uuid4().hex)
        await self.fleet.js.publish(subjects.metric(REGION, worker.id), data, headers=headers)

    async def handled(self, worker: W.Worker, minute: float) -> None:
        """Wait until remediation has seen the worker's sample of `minute` (and so every earlier one)."""
        at = BASE + timedelta(minutes=minute)

        async def seen() -> bool:
            state, _ = await self.fleet.store.get(worker.id)
            return state.remediation.last_seen == at
        await eventually(seen, timeout=60)

    async def actions(self, worker: W.Worker, count: int) -> list[str]:
        """The worker's decisions, once there are `count` (actions follow the state write they were claimed in)."""
        await eventually(lambda: len(self.fleet.decisions.actions(worker.id)) >= count, timeout=60)
        return self.fleet.decisions.actions(worker.id)

    async def alert_after(self, worker: W.Worker, decision: str) -> alert_pb2.Alert:
        """The worker's remediation alert published with its decision `decision` (it follows the decision)."""
        def found() -> alert_pb2.Alert | None:
            return next((a for a in self.alerts if a.worker_id == worker.id and f".{decision}." in a.transition_id),
                        None)
        alert: alert_pb2.Alert = await eventually(found, timeout=60)
        return alert


@pytest.fixture
async def healing(nats_url: str, aws_endpoint: str, js: JetStreamContext) -> AsyncIterator[Healing]:
    decisions = Decisions()
    alerts: list[alert_pb2.Alert] = []

    async def on_decision(msg: Any) -> None:
        decisions.seen.append(messages.decode(events_pb2.AutopilotDecision, msg.data, msg.headers))

    async def on_alert(msg: Any) -> None:
        alerts.append(messages.decode(alert_pb2.Alert, msg.data, msg.headers))

    subs = [await js.subscribe(subjects.AUTOPILOT_ALL, cb=on_decision, ordered_consumer=True,
                               deliver_policy=DeliverPolicy.NEW),
            await js.subscribe("cml.alerts.*.remediation", cb=on_alert, ordered_consumer=True,
                               deliver_policy=DeliverPolicy.NEW)]
    async with (CountingAwsProxy(aws_endpoint) as aws,
                running_registry(registry_settings(nats_url, aws.url)) as registry,
                aioboto3.Session().client("ec2", region_name=REGION, endpoint_url=aws_endpoint) as ec2):
        yield Healing(Fleet(js, registry, ec2, decisions, await KvStateStore.open(js), aws), aws, alerts)
    for sub in subs:
        await sub.unsubscribe()


def remediating(nats_url: str, healing: Healing, mode: str) -> Any:
    """An autopilot that only remediates: impaired 2 min -> act, 10 min to recover, one per hour."""
    return running_autopilots(healing.fleet.js, autopilot_settings(
        nats_url, healing.fleet.registry, f"autopilot-{uuid.uuid4().hex[:8]}", autostop_mode="off",
        remediation_mode=mode, remediation_impaired_for_seconds=120, remediation_recover_within_seconds=600,
        remediation_period_seconds=3600, aws_endpoint_url=healing.aws.url))


async def test_reboot_once_per_period_and_escalation(healing: Healing, nats_url: str) -> None:
    relapsing = await healing.fleet.worker({})  # rebooted, recovers, impaired again within the hour
    stuck = await healing.fleet.worker({})  # rebooted, never recovers
    async with remediating(nats_url, healing, "enforce"):
        for minute in range(0, 4):
            for worker in (relapsing, stuck):
                await healing.sample(worker, minute, instance=IMPAIRED)
        assert await healing.actions(relapsing, 1) == ["rebooted"]
        await healing.sample(relapsing, 4, instance=INIT)
        await healing.sample(relapsing, 5)
        assert await healing.actions(relapsing, 2) == ["rebooted", "recovered"]
        assert (await healing.alert_after(relapsing, "recovered")).state == alert_pb2.ALERT_STATE_RESOLVED
        for minute in range(6, 10):
            await healing.sample(relapsing, minute, instance=IMPAIRED)
        for minute in range(4, 25):
            await healing.sample(stuck, minute, instance=IMPAIRED)
        await healing.handled(relapsing, 9)
        await healing.handled(stuck, 24)
        assert await healing.actions(relapsing, 3) == ["rebooted", "recovered", "escalated"]
        assert await healing.actions(stuck, 2) == ["rebooted", "escalated"]
    escalations = [d for d in healing.fleet.decisions.seen if d.action == "escalated"]
    assert "at most one per" in next(d.reason for d in escalations if d.worker_id == relapsing.id)
    assert "not healthy 10 min after the reboot" in next(d.reason for d in escalations if d.worker_id == stuck.id)
    for worker in (relapsing, stuck):
        assert healing.aws.made("RebootInstances", worker.instance_id) == 1  # once, then left alone
        alert = await healing.alert_after(worker, "escalated")
        assert (alert.rule, alert.severity, alert.state) == (
            "remediation", alert_pb2.ALERT_SEVERITY_CRITICAL, alert_pb2.ALERT_STATE_FIRING)
        assert await healing.fleet.ec2_state(worker) == "running"


async def test_a_failed_system_check_stops_and_starts_the_worker(healing: Healing, nats_url: str) -> None:
    worker = await healing.fleet.worker({})
    registry = healing.fleet.registry.stub
    async with remediating(nats_url, healing, "enforce"):
        for minute in range(0, 3):
            await healing.sample(worker, minute, system=IMPAIRED)
        assert await healing.actions(worker, 1) == ["stop_start_stopping"]
        assert await healing.fleet.ec2_state(worker) in ("stopping", "stopped")

        await healing.sample(worker, 3, system=W.STATUS_CHECK_NOT_APPLICABLE, instance=W.STATUS_CHECK_NOT_APPLICABLE,
                             status=W.WORKER_STATUS_STOPPED)

        async def registry_saw_the_stop_end() -> bool:  # until it has, StartWorker is refused (and asked again)
            got = (await registry.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
            return got.status != W.WORKER_STATUS_STOPPING  # stopped, or pending when the first start went through
        await eventually(registry_saw_the_stop_end, timeout=60)
        await healing.handled(worker, 3)
        await healing.sample(worker, 4, system=W.STATUS_CHECK_NOT_APPLICABLE, instance=W.STATUS_CHECK_NOT_APPLICABLE,
                             status=W.WORKER_STATUS_STOPPED)
        assert await healing.actions(worker, 2) == ["stop_start_stopping", "stop_start_starting"]
        await healing.sample(worker, 6)
        assert await healing.actions(worker, 3) == ["stop_start_stopping", "stop_start_starting", "recovered"]
    assert healing.aws.made("StopInstances", worker.instance_id) == 1
    assert healing.aws.made("StartInstances", worker.instance_id) == 1
    assert await healing.fleet.ec2_state(worker) in ("pending", "running")
    got = (await registry.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
    assert got.requested_status == W.WORKER_STATUS_RUNNING  # the last thing asked of it


async def test_dry_run_says_what_it_would_do_and_changes_nothing_on_aws(healing: Healing, nats_url: str) -> None:
    rebootable, movable = await healing.fleet.worker({}), await healing.fleet.worker({})
    before = len(healing.aws.calls)  # the imports' look-ups (the registry's)
    async with remediating(nats_url, healing, "dry-run"):
        for minute in range(0, 8):
            await healing.sample(rebootable, minute, instance=IMPAIRED)
            await healing.sample(movable, minute, system=IMPAIRED)
        await healing.handled(rebootable, 7)
        await healing.handled(movable, 7)
        assert await healing.actions(rebootable, 1) == ["would_reboot"]
        assert await healing.actions(movable, 1) == ["would_stop_start"]
    # The autopilot's AWS calls go through the proxy too: none, not even a read (the root device type that lets a
    # stop-and-start fit came with GetWorker, recorded by the registry at the import); nor did the registry
    # change anything on AWS.
    assert movable.root_device_type == W.ROOT_DEVICE_TYPE_EBS
    assert healing.aws.calls[before:] == []
    assert healing.fleet.decisions.actions(rebootable.id) == ["would_reboot"]
    for worker in (rebootable, movable):
        assert await healing.fleet.ec2_state(worker) == "running"
