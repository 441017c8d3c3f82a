"""Licence-safe termination against a real registry (moto, NATS, gRPC) and the CML controller stand-in: the
licence is deregistered before the instance is terminated; a refusal (nodes running) or an unreachable
controller answers FAILED_PRECONDITION and terminates nothing; force terminates and raises an alert."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from cml.monitor.v1 import alert_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_core import messages
from cmlmon_dev.cml_sim import CmlController
from cmlmon_dev.servers import free_port
from tests.integration.registry.conftest import AMI, REGION, RunningRegistry, registry_settings, running_registry
from tests.support import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def guarded(nats_url: str, aws_endpoint: str, js: JetStreamContext) -> AsyncIterator[RunningRegistry]:
    async with running_registry(registry_settings(nats_url, aws_endpoint, cml_password="cml-password")) as running:
        yield running


@pytest.fixture
async def cml() -> AsyncIterator[CmlController]:
    async with CmlController() as controller:
        yield controller


async def import_worker(registry: RunningRegistry, ec2: Any, url: str) -> worker_pb2.Worker:
    run = await ec2.run_instances(ImageId=AMI, InstanceType="c5.metal", MinCount=1, MaxCount=1)
    reply = await registry.stub.ImportWorker(rs.ImportWorkerRequest(
        region=REGION, instance_id=run["Instances"][0]["InstanceId"], name=f"cml-{uuid.uuid4().hex[:6]}",
        tags={"cml:url": url}))
    return reply.worker


async def ec2_state(ec2: Any, worker: worker_pb2.Worker) -> str:
    reply = await ec2.describe_instances(InstanceIds=[worker.instance_id])
    return str(reply["Reservations"][0]["Instances"][0]["State"]["Name"])


async def test_the_licence_is_deregistered_before_termination(guarded: RunningRegistry, cml: CmlController,
                                                              ec2: Any) -> None:
    cml.add_lab("STOPPED")
    worker = await import_worker(guarded, ec2, cml.url)
    await guarded.stub.TerminateWorker(rs.TerminateWorkerRequest(id=worker.id))
    assert cml.registration == "NOT_REGISTERED"
    assert ("DELETE", "/api/v0/licensing/deregistration") in cml.calls
    assert await ec2_state(ec2, worker) in ("shutting-down", "terminated")


@pytest.mark.parametrize("trouble", ["nodes running", "unreachable"])
async def test_a_licence_that_cannot_be_released_refuses_then_force_terminates_and_alerts(
        trouble: str, guarded: RunningRegistry, cml: CmlController, ec2: Any, js: JetStreamContext) -> None:
    cml.add_lab("BOOTED")
    url = cml.url if trouble == "nodes running" else f"http://127.0.0.1:{free_port()}"
    worker = await import_worker(guarded, ec2, url)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await guarded.stub.TerminateWorker(rs.TerminateWorkerRequest(id=worker.id))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "licence" in (refused.value.details() or "")
    assert await ec2_state(ec2, worker) == "running"
    assert cml.registration == "COMPLETED"

    alerts: list[alert_pb2.Alert] = []

    async def on_msg(msg: Any) -> None:
        alerts.append(messages.decode(alert_pb2.Alert, msg.data, msg.headers))

    sub = await js.subscribe(f"cml.alerts.{worker.id}.licence_not_released", cb=on_msg, ordered_consumer=True,
                             deliver_policy=DeliverPolicy.NEW)
    try:
        await guarded.stub.TerminateWorker(rs.TerminateWorkerRequest(id=worker.id, force=True))
        assert await ec2_state(ec2, worker) in ("shutting-down", "terminated")
        await eventually(lambda: alerts, timeout=30)
    finally:
        await sub.unsubscribe()
    assert alerts[0].severity == alert_pb2.ALERT_SEVERITY_CRITICAL and alerts[0].worker_id == worker.id


async def test_without_cml_credentials_a_worker_with_a_controller_needs_force(
        registry: RunningRegistry, cml: CmlController, ec2: Any) -> None:
    worker = await import_worker(registry, ec2, cml.url)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await registry.stub.TerminateWorker(rs.TerminateWorkerRequest(id=worker.id))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "CML_PASSWORD" in (refused.value.details() or "")
    await registry.stub.TerminateWorker(rs.TerminateWorkerRequest(id=worker.id, force=True))
