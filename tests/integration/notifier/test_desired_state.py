"""Desired state from the EC2 call to the delivered alert: moto is made to refuse a start the way EC2 does when
the instance's KMS key cannot be used — StartInstances is accepted ("pending"), the instance falls back to
stopped, and DescribeInstances gives the reason `Client.InternalError` (botocore hooks on the registry's own
client). The registry records what was asked and EC2's reason; a notifier started afterwards learns the worker
from CML_WORKERS and fires `stuck_transition` with that reason at a real webhook receiver. (A start EC2 refuses
outright, e.g. for capacity, changes no desired state: tests/integration/registry/test_capacity.py.)"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import aioboto3
import pytest
from nats.js import JetStreamContext

from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_core.aws import AwsClients
from registry.adapters.ec2 import AwsEc2
from registry.bootstrap import bootstrap
from tests.integration.notifier.support import eventually, notifier_settings, receiving, running_notifier
from tests.integration.registry.conftest import REGION, registry_settings
from tests.integration.registry.test_skeleton import launch_plain_instance

pytestmark = pytest.mark.integration
W = worker_pb2
KMS = "Client.InternalError: Client error on launch"


async def test_a_start_ec2_gives_up_on_fires_stuck_transition_with_awss_reason(
        js: JetStreamContext, nats_url: str, aws_endpoint: str, uid: str) -> None:
    async with aioboto3.Session().client("ec2", region_name=REGION, endpoint_url=aws_endpoint) as ec2:
        instance_id = await launch_plain_instance(ec2, f"kms-{uid}")
        await ec2.stop_instances(InstanceIds=[instance_id])
    starts: list[dict[str, Any]] = []

    def accepted_but_not_started(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        starts.append(params)
        return SimpleNamespace(status_code=200, headers={}), {"StartingInstances": [{
            "InstanceId": instance_id, "CurrentState": {"Code": 0, "Name": "pending"},
            "PreviousState": {"Code": 80, "Name": "stopped"}}], "ResponseMetadata": {"HTTPStatusCode": 200}}

    def kms_reason(parsed: dict[str, Any], **_: Any) -> None:
        for reservation in parsed.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                if instance["InstanceId"] == instance_id:
                    instance["StateReason"] = {"Code": "Client.InternalError", "Message": KMS}

    settings = registry_settings(nats_url, aws_endpoint)
    async with AwsClients(settings) as clients:
        client = await clients.get("ec2", REGION)
        client.meta.events.register("before-call.ec2.StartInstances", accepted_but_not_started)
        client.meta.events.register("after-call.ec2.DescribeInstances", kms_reason)
        registry = (await bootstrap(settings, js, ec2=AwsEc2(clients))).registry
        worker = await registry.import_worker(rs.ImportWorkerRequest(region=REGION, instance_id=instance_id,
                                                                     name=f"kms-{uid}"))
        started = await registry.start_worker(worker.id)
        assert (started.status, started.requested_status) == (W.WORKER_STATUS_PENDING, W.WORKER_STATUS_RUNNING)
        assert len(starts) == 1
        fell_back = events_pb2.MetricSample(worker_id=worker.id, region=REGION, instance_id=instance_id,
                                            status=W.WORKER_STATUS_STOPPED, ec2_state="stopped")
        fell_back.observe_time.GetCurrentTime()
        assert await registry.apply_sample(fell_back)  # what the collector sees next
        stuck = await registry.get_worker(worker.id)
        assert (stuck.status, stuck.requested_status, stuck.state_reason) == (
            W.WORKER_STATUS_STOPPED, W.WORKER_STATUS_RUNNING, KMS)

    async with receiving() as receiver:
        overrides = notifier_settings(nats_url, uid, worker_notification_webhooks=receiver.url,
                                      stuck_transition_seconds=1, stuck_transition_overrides="")
        async with running_notifier(overrides):
            [fired] = await eventually(lambda: [r for r in receiver.for_worker(worker.id)
                                                if r.json()["rule"] == "stuck_transition"], timeout=60)
    body = fired.json()
    assert (body["status"], body["severity"]) == ("firing", "warning")
    assert "asked to be running" in body["summary"] and body["summary"].endswith(f"(AWS: {KMS})")
