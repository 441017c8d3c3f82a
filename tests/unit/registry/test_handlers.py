"""The use-cases over fakes: outbox semantics, idempotent create, claims."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from registry.adapters.ec2 import LaunchSpec
from registry.adapters.repository import Claim
from registry.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from registry.service.handlers import Registry
from registry.service.view import WorkerView
from tests.unit.registry.fakes import FakeEc2, FakePublisher, FakeRepo

E = events_pb2
W = worker_pb2
REQUEST = rs.CreateWorkerRequest(request_id="r1", name="one", region="us-east-1", instance_type="t3.micro",
                                 ami_id="ami-12345678")


@pytest.fixture
def parts() -> tuple[Registry, FakeRepo, FakePublisher, FakeEc2]:
    repo, publisher, ec2 = FakeRepo(), FakePublisher(), FakeEc2()
    return Registry(repo, ec2, publisher, WorkerView()), repo, publisher, ec2


async def test_create_is_idempotent(parts: tuple[Registry, FakeRepo, FakePublisher, FakeEc2]) -> None:
    registry, _, publisher, ec2 = parts
    first = await registry.create_worker(REQUEST)
    second = await registry.create_worker(REQUEST)
    assert first.id == second.id and ec2.launches == 1
    assert [e.type for e in publisher.events] == [E.WORKER_EVENT_TYPE_CREATED]


async def test_event_survives_a_failed_publish(parts: tuple[Registry, FakeRepo, FakePublisher, FakeEc2]) -> None:
    registry, repo, publisher, _ = parts
    publisher.fail = True
    with pytest.raises(Unavailable):
        await registry.create_worker(REQUEST)
    stored = next(iter(repo.values))
    assert (await repo.get(stored)).pending is not None  # type: ignore[union-attr]
    publisher.fail = False
    worker = await registry.create_worker(REQUEST)  # the retry publishes the saved event, once
    assert [e.type for e in publisher.events] == [E.WORKER_EVENT_TYPE_CREATED]
    assert (await repo.get(worker.id)).pending is None  # type: ignore[union-attr]


async def test_next_writer_publishes_an_orphaned_event_first(
        parts: tuple[Registry, FakeRepo, FakePublisher, FakeEc2]) -> None:
    registry, _, publisher, _ = parts
    worker = await registry.create_worker(REQUEST)
    publisher.fail = True
    with pytest.raises(Unavailable):
        await registry.stop_worker(worker.id)
    publisher.fail = False
    await registry.terminate_worker(worker.id)
    assert [e.type for e in publisher.events] == [E.WORKER_EVENT_TYPE_CREATED, E.WORKER_EVENT_TYPE_STOPPED,
                                                  E.WORKER_EVENT_TYPE_STATUS_CHANGED]
    assert publisher.events[2].previous_status == W.WORKER_STATUS_STOPPING


async def test_sweep_publishes_orphans(parts: tuple[Registry, FakeRepo, FakePublisher, FakeEc2]) -> None:
    registry, repo, publisher, _ = parts
    publisher.fail = True
    with pytest.raises(Unavailable):
        await registry.create_worker(REQUEST)
    publisher.fail = False
    fresh = Registry(repo, FakeEc2(), publisher, WorkerView())  # a new process
    async for stored in repo.watch():
        if stored is not None:
            fresh.view.apply(stored)
    assert await fresh.sweep_outbox() == 1
    assert len(publisher.events) == 1 and await fresh.sweep_outbox() == 0


async def test_import_claims(parts: tuple[Registry, FakeRepo, FakePublisher, FakeEc2]) -> None:
    registry, _, _, ec2 = parts
    created = await registry.create_worker(REQUEST)
    with pytest.raises(AlreadyExists):
        await registry.import_worker(rs.ImportWorkerRequest(region="us-east-1", instance_id=created.instance_id))
    with pytest.raises(NotFound):
        await registry.import_worker(rs.ImportWorkerRequest(region="us-east-1", instance_id="i-0000000000000abcd"))
    await registry.terminate_worker(created.id)
    with pytest.raises(FailedPrecondition):
        await registry.stop_worker(created.id)
    assert ec2.launches == 1


async def test_a_request_id_reused_for_another_worker_is_refused(
        parts: tuple[Registry, FakeRepo, FakePublisher, FakeEc2]) -> None:
    registry, _, _, ec2 = parts
    await registry.create_worker(REQUEST)
    other = rs.CreateWorkerRequest()
    other.CopyFrom(REQUEST)
    other.name = "two"
    with pytest.raises(AlreadyExists):
        await registry.create_worker(other)
    assert ec2.launches == 1


async def test_concurrent_imports_of_one_instance_make_one_worker(
        parts: tuple[Registry, FakeRepo, FakePublisher, FakeEc2]) -> None:
    registry, repo, publisher, ec2 = parts
    instance = await ec2.launch(LaunchSpec("us-east-1", "t3.micro", "ami-12345678", "tok", {}))
    request = rs.ImportWorkerRequest(region="us-east-1", instance_id=instance.instance_id)
    create = repo.create

    async def slow_create(*args: Any) -> Any:  # the first importer is slow to save after claiming
        await asyncio.sleep(0.01)
        return await create(*args)

    repo.create = slow_create  # type: ignore[method-assign,assignment]
    results = await asyncio.gather(*(registry.import_worker(request) for _ in range(4)), return_exceptions=True)
    assert sum(isinstance(r, W.Worker) for r in results) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if not isinstance(r, W.Worker))
    assert len(repo.values) == 1 and len(publisher.events) == 1


async def test_an_orphaned_claim_is_free_after_a_while(
        parts: tuple[Registry, FakeRepo, FakePublisher, FakeEc2]) -> None:
    registry, repo, _, ec2 = parts
    instance = await ec2.launch(LaunchSpec("us-east-1", "t3.micro", "ami-12345678", "tok", {}))
    repo.claims[f"us-east-1/{instance.instance_id}"] = Claim("w-died-before-saving", 99, time.time() - 3600)
    worker = await registry.import_worker(rs.ImportWorkerRequest(region="us-east-1", instance_id=instance.instance_id))
    assert repo.claims[f"us-east-1/{instance.instance_id}"].worker_id == worker.id


async def test_concurrent_retries_of_one_create_launch_once(
        parts: tuple[Registry, FakeRepo, FakePublisher, FakeEc2]) -> None:
    registry, _, publisher, ec2 = parts
    results = await asyncio.gather(*(registry.create_worker(REQUEST) for _ in range(5)))
    assert len({w.id for w in results}) == 1 and ec2.launches == 1 and len(publisher.events) == 1
    assert registry._create_locks == {}
