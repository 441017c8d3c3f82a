"""The worker store's contract, run on both stores (NATS KV and MongoDB): compare-and-set with etags, the
instance claim, the outbox, the listing view kept current by the store's watch, paging over 10,000 workers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from nats.js import JetStreamContext

from cml.monitor.internal.v1 import outbox_pb2
from cml.monitor.v1 import events_pb2, registry_service_pb2, worker_pb2
from registry.adapters.repository import WorkerRepository
from registry.bootstrap import bootstrap
from registry.domain import model
from registry.errors import Conflict
from registry.service.view import WorkerView
from tests.conftest import Store
from tests.integration.registry.conftest import REGION, registry_settings
from tests.support import eventually

pytestmark = pytest.mark.integration

W = worker_pb2


def new_worker(worker_id: str, instance_id: str = "i-0123456789abcdef0") -> W.Worker:
    return W.Worker(id=worker_id, name=worker_id, region=REGION, instance_id=instance_id,
                    status=W.WORKER_STATUS_RUNNING)


def pending(event_type: int = events_pb2.WORKER_EVENT_TYPE_CREATED) -> outbox_pb2.PendingWorkerEvent:
    change = model.Change(W.Worker(), event_type, model.UNSPECIFIED, True)  # type: ignore[arg-type]
    return model.pending_event(change, datetime.now(UTC))


@contextlib.asynccontextmanager
async def following(repo: WorkerRepository) -> AsyncIterator[WorkerView]:
    """A listing view kept current by the store's watch, loaded before it is handed out."""
    view = WorkerView()
    task = asyncio.create_task(view.follow(repo, retry_seconds=0.1))
    try:
        await asyncio.wait_for(view.ready.wait(), 60)
        yield view
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_create_is_once_and_update_is_compare_and_set(store: Store, uid: str) -> None:
    repo = await store.open()
    worker_id = f"w-cas-{uid}"
    created = await repo.create(new_worker(worker_id), None)
    assert created.worker.etag == str(created.revision)
    with pytest.raises(Conflict):
        await repo.create(new_worker(worker_id), None)
    changed = W.Worker()
    changed.CopyFrom(created.worker)
    changed.name = "renamed"
    updated = await repo.update(changed, None, created.revision)
    assert updated.revision != created.revision and updated.worker.etag == str(updated.revision)
    with pytest.raises(Conflict):  # a writer that read before that update loses
        await repo.update(changed, None, created.revision)
    got = await repo.get(worker_id)
    assert got is not None and got.worker.name == "renamed" and got.revision == updated.revision
    assert await repo.get(f"w-none-{uid}") is None


async def test_concurrent_writers_through_two_clients_keep_every_update(
        store: Store, nats_url: str, aws_endpoint: str, js: JetStreamContext, uid: str) -> None:
    settings = registry_settings(nats_url, aws_endpoint)
    a, b = [(await bootstrap(settings, js, repo=await store.open())).registry for _ in range(2)]
    worker_id = f"w-race-{uid}"
    await a.repo.create(new_worker(worker_id), None)

    def bump(current: W.Worker) -> model.Change:
        new = W.Worker()
        new.CopyFrom(current)
        new.poll_interval_seconds += 1
        return model.Change(new)

    async def bump_many(registry: object) -> None:
        for _ in range(15):
            await registry.mutate(worker_id, bump)  # type: ignore[attr-defined]

    await asyncio.gather(bump_many(a), bump_many(b), bump_many(a), bump_many(b))
    final = await b.repo.get(worker_id)
    assert final is not None and final.worker.poll_interval_seconds == 60


async def test_an_instance_is_claimed_once_and_moved_only_by_compare_and_set(store: Store, uid: str) -> None:
    one, two = await store.open(), await store.open()
    instance_id = f"i-{uid}"
    assert await one.get_claim(REGION, instance_id) is None
    await one.put_claim(REGION, instance_id, f"w-a-{uid}", None)
    with pytest.raises(Conflict):  # a second first claim, from another client
        await two.put_claim(REGION, instance_id, f"w-b-{uid}", None)
    claim = await two.get_claim(REGION, instance_id)
    assert claim is not None and claim.worker_id == f"w-a-{uid}" and claim.claimed_at > 0
    await two.put_claim(REGION, instance_id, f"w-b-{uid}", claim.revision)
    with pytest.raises(Conflict):  # the same revision, once more: lost
        await one.put_claim(REGION, instance_id, f"w-c-{uid}", claim.revision)
    moved = await one.get_claim(REGION, instance_id)
    assert moved is not None and moved.worker_id == f"w-b-{uid}"
    assert await one.get_claim("eu-west-1", instance_id) is None  # the claim is per region


async def test_the_outbox_event_is_saved_with_the_worker_and_published_once_by_the_sweep(
        store: Store, nats_url: str, aws_endpoint: str, js: JetStreamContext, uid: str) -> None:
    repo = await store.open()
    worker_id = f"w-outbox-{uid}"
    saved = await repo.create(new_worker(worker_id), pending())  # what a process dying right after saving leaves
    reread = await repo.get(worker_id)
    assert reread is not None and reread.pending == saved.pending
    registry = (await bootstrap(registry_settings(nats_url, aws_endpoint), js, repo=await store.open())).registry
    async with following(registry.repo) as view:
        registry.view = view
        assert await registry.sweep_outbox() >= 1
        await eventually(lambda: _cleared(view, worker_id), timeout=30)
        await registry.sweep_outbox()  # ours is settled: not published again
    subject = f"cml.workers.{worker_id}.>"
    info = await js.stream_info("CML_WORKERS", subjects_filter=subject)
    assert sum((info.state.subjects or {}).values()) == 1
    msg = await js.get_last_msg("CML_WORKERS", f"cml.workers.{worker_id}.created")
    assert saved.pending is not None
    assert events_pb2.WorkerEvent.FromString(msg.data or b"").event_id == saved.pending.event_id
    cleared = await repo.get(worker_id)
    assert cleared is not None and cleared.pending is None


def _cleared(view: WorkerView, worker_id: str) -> bool:
    seen = view.get(worker_id)
    return seen is not None and seen.pending is None


async def test_the_view_lists_then_follows_writes_of_other_clients(store: Store, uid: str) -> None:
    writer = await store.open()
    before = await writer.create(new_worker(f"w-view-{uid}-a"), None)
    async with following(await store.open()) as view:
        assert view.get(before.worker.id) is not None
        created = await writer.create(new_worker(f"w-view-{uid}-b"), pending())
        changed = W.Worker()
        changed.CopyFrom(before.worker)
        changed.status = W.WORKER_STATUS_STOPPED
        await writer.update(changed, None, before.revision)
        await eventually(lambda: view.get(created.worker.id) is not None, timeout=30)
        await eventually(lambda: view.get(before.worker.id).worker.status == W.WORKER_STATUS_STOPPED,  # type: ignore[union-attr]
                         timeout=30)
        seen = view.get(created.worker.id)
        assert seen is not None and seen.pending is not None and seen.worker.etag == created.worker.etag


async def test_paging_over_ten_thousand_workers_lists_each_once_in_order(store: Store, uid: str) -> None:
    writer = await store.open()
    ids = [f"w-page-{uid}-{n:05d}" for n in range(10_000)]
    lanes = 32
    async def create(lane: int) -> None:
        for worker_id in ids[lane::lanes]:
            await writer.create(new_worker(worker_id, f"i-{worker_id[-5:]}"), None)
    await asyncio.gather(*(create(lane) for lane in range(lanes)))
    prefix = f"w-page-{uid}-"
    async with following(await store.open()) as view:
        await eventually(lambda: view.get(ids[-1]) is not None and view.get(ids[0]) is not None, timeout=60)
        listed: list[str] = []
        after = ""
        while True:
            parts, after, more = view.page(after, lambda w: w.id.startswith(prefix), 100)
            listed += [registry_service_pb2.GetWorkerResponse.FromString(p).worker.id for p in parts]
            if not more:
                break
    assert listed == ids


async def test_replicas_agree_on_one_page_token_key(store: Store) -> None:
    one, two = await store.open(), await store.open()
    first = await one.shared_secret(b"proposal-one")
    assert await two.shared_secret(b"proposal-two") == first
