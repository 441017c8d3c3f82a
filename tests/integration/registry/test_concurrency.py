"""Two registries against one NATS: compare-and-set keeps every update, shared samples keep one event chain;
CreateWorker survives a crash between launching and saving."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext

from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from registry.bootstrap import bootstrap
from registry.domain import model
from registry.service.handlers import Registry
from tests.integration.registry.conftest import (
    AMI,
    REGION,
    EventTap,
    RunningRegistry,
    eventually,
    registry_settings,
    running_registry,
    samples_consumed,
)
from tests.integration.registry.test_skeleton import publish_sample

pytestmark = pytest.mark.integration

W = worker_pb2
E = events_pb2


@pytest.fixture
async def two_registries(nats_url: str, aws_endpoint: str, js: JetStreamContext) -> AsyncIterator[list[Registry]]:
    connections = [await nats.connect(nats_url) for _ in range(2)]
    settings = registry_settings(nats_url, aws_endpoint)
    wired = [await bootstrap(settings, nc.jetstream()) for nc in connections]
    try:
        yield [w.registry for w in wired]
    finally:
        for w in wired:
            if w.aws is not None:
                await w.aws.__aexit__(None, None, None)
        for nc in connections:
            await nc.drain()


async def test_concurrent_updates_from_two_registries_are_all_kept(two_registries: list[Registry], uid: str) -> None:
    a, b = two_registries
    worker = await a.create_worker(rs.CreateWorkerRequest(
        request_id=f"cas-{uid}", name=f"cas-{uid}", region=REGION, instance_type="t3.micro", ami_id=AMI))

    def bump(current: W.Worker) -> model.Change:
        new = W.Worker()
        new.CopyFrom(current)
        new.poll_interval_seconds += 1
        return model.Change(new)

    async def bump_many(registry: Registry) -> None:
        for _ in range(25):
            await registry.mutate(worker.id, bump)

    await asyncio.gather(bump_many(a), bump_many(b), bump_many(a), bump_many(b))
    final = await b.repo.get(worker.id)
    assert final is not None and final.worker.poll_interval_seconds == 100


async def test_two_registry_servers_share_samples_and_keep_one_event_chain(
        nats_url: str, aws_endpoint: str, js: JetStreamContext, tap: EventTap, uid: str) -> None:
    async with running_registry(registry_settings(nats_url, aws_endpoint)) as one, \
            running_registry(registry_settings(nats_url, aws_endpoint)) as two:
        created = (await one.stub.CreateWorker(rs.CreateWorkerRequest(
            request_id=f"pair-{uid}", name=f"pair-{uid}", region=REGION, instance_type="t3.micro",
            ami_id=AMI))).worker
        seen_by_two = (await two.stub.GetWorker(rs.GetWorkerRequest(id=created.id))).worker
        assert seen_by_two.instance_id == created.instance_id
        statuses = [W.WORKER_STATUS_RUNNING, W.WORKER_STATUS_STOPPING, W.WORKER_STATUS_STOPPED,
                    W.WORKER_STATUS_PENDING] * 5 + [W.WORKER_STATUS_RUNNING]
        for status in statuses:
            await publish_sample(js, created, status=status)
        await eventually(lambda: _status(two, created.id, W.WORKER_STATUS_RUNNING))
        await samples_consumed(js)
        chain = tap.of(created.id)
        assert chain[0].type == E.WORKER_EVENT_TYPE_CREATED and len(chain) >= 2
        for before, after in itertools.pairwise(chain):
            assert after.previous_status == before.worker.status  # no gap, no repeat, one writer at a time
            assert after.worker.status != before.worker.status
        assert chain[-1].worker.status == W.WORKER_STATUS_RUNNING
        assert len({e.event_id for e in chain}) == len(chain)


async def _status(registry: RunningRegistry, worker_id: str, status: int) -> bool:
    got = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker_id))).worker
    return got.status == status



async def test_create_after_a_crash_between_launch_and_save_adopts_the_instance(
        registry: RunningRegistry, ec2: Any, uid: str) -> None:
    request_id = f"half-{uid}"
    token = model.client_token(request_id)
    # what a registry that died right after RunInstances leaves behind: an instance, no worker
    launched = await ec2.run_instances(
        ImageId=AMI, InstanceType="t3.micro", MinCount=1, MaxCount=1, ClientToken=token,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": model.REQUEST_TAG, "Value": token}]}])
    instance_id = launched["Instances"][0]["InstanceId"]
    worker = (await registry.stub.CreateWorker(rs.CreateWorkerRequest(
        request_id=request_id, name=f"half-{uid}", region=REGION, instance_type="t3.micro", ami_id=AMI))).worker
    assert worker.instance_id == instance_id
    found = await ec2.describe_instances(Filters=[{"Name": f"tag:{model.REQUEST_TAG}", "Values": [token]}])
    assert sum(len(r["Instances"]) for r in found["Reservations"]) == 1
