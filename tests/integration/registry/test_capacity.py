"""Desired state against moto's EC2. StartWorker when EC2 has no capacity (StartInstances refused with
InsufficientInstanceCapacity through a botocore hook): UNAVAILABLE naming AWS's reason, no retry of its own, and
what was last asked of the worker unchanged; when capacity returns, the next start records the request. A worker
that leaves the way to its requested status carries EC2's StateReason."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from nats.js import JetStreamContext

from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_core.aws import AwsClients
from registry.adapters.ec2 import AwsEc2
from registry.bootstrap import bootstrap
from registry.entrypoints.grpc_api import status_of
from registry.errors import Unavailable
from tests.integration.registry.conftest import REGION, EventTap, RunningRegistry, eventually, registry_settings
from tests.integration.registry.test_lifecycle import create, status_is
from tests.integration.registry.test_skeleton import launch_plain_instance, publish_sample

pytestmark = pytest.mark.integration
W = worker_pb2
E = events_pb2
REASON = "We currently do not have sufficient c5.metal capacity in the Availability Zone you requested."


async def test_start_refused_for_capacity(js: JetStreamContext, nats_url: str, aws_endpoint: str, ec2: Any,
                                          uid: str) -> None:
    instance_id = await launch_plain_instance(ec2, f"cap-{uid}")
    await ec2.stop_instances(InstanceIds=[instance_id])
    settings = registry_settings(nats_url, aws_endpoint)
    refused: list[dict[str, Any]] = []

    def no_capacity(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        refused.append(params)
        return SimpleNamespace(status_code=500, headers={}), {
            "Error": {"Code": "InsufficientInstanceCapacity", "Message": REASON},
            "ResponseMetadata": {"HTTPStatusCode": 500}}

    async with AwsClients(settings) as clients:
        client = await clients.get("ec2", REGION)
        client.meta.events.register("before-call.ec2.StartInstances", no_capacity)
        registry = (await bootstrap(settings, js, ec2=AwsEc2(clients))).registry
        worker = await registry.import_worker(rs.ImportWorkerRequest(region=REGION, instance_id=instance_id,
                                                                     name=f"cap-{uid}"))
        assert worker.status == W.WORKER_STATUS_STOPPED and worker.requested_status == W.WORKER_STATUS_UNSPECIFIED

        with pytest.raises(Unavailable) as refusal:
            await registry.start_worker(worker.id)
        assert "InsufficientInstanceCapacity" in str(refusal.value)
        assert status_of(refusal.value) == grpc.StatusCode.UNAVAILABLE
        assert len(refused) == 1  # asked EC2 once: the caller decides when to try again
        after = await registry.get_worker(worker.id)
        assert (after.status, after.requested_status) == (W.WORKER_STATUS_STOPPED, W.WORKER_STATUS_UNSPECIFIED)
        assert not after.HasField("requested_time")

        client.meta.events.unregister("before-call.ec2.StartInstances", no_capacity)  # capacity is back
        started = await registry.start_worker(worker.id)
        assert started.requested_status == W.WORKER_STATUS_RUNNING and started.HasField("requested_time")
        assert started.requested_time.ToSeconds() >= after.update_time.ToSeconds()


async def test_a_worker_leaving_the_way_it_was_asked_for_carries_ec2s_reason(
        registry: RunningRegistry, tap: EventTap, js: JetStreamContext, ec2: Any, uid: str) -> None:
    worker = await create(registry, uid)  # asked to run
    await publish_sample(js, worker, status=W.WORKER_STATUS_RUNNING)
    await eventually(lambda: status_is(registry, worker.id, W.WORKER_STATUS_RUNNING))
    await ec2.stop_instances(InstanceIds=[worker.instance_id])  # behind the registry's back: EC2 records why
    await publish_sample(js, worker, status=W.WORKER_STATUS_STOPPED)  # what the collector then observes

    def stopped() -> list[E.WorkerEvent]:
        return [e for e in tap.of(worker.id, E.WORKER_EVENT_TYPE_STATUS_CHANGED)
                if e.worker.status == W.WORKER_STATUS_STOPPED]

    [event] = await eventually(stopped)
    assert not event.requested and event.worker.requested_status == W.WORKER_STATUS_RUNNING
    assert event.worker.state_reason.startswith("Client.UserInitiatedShutdown")
    stored = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
    assert stored.state_reason == event.worker.state_reason
    started = (await registry.stub.StartWorker(rs.StartWorkerRequest(id=worker.id))).worker
    assert started.state_reason == ""  # a new request: the old reason no longer applies
