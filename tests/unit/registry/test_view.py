from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from cml.monitor.internal.v1 import outbox_pb2
from cml.monitor.v1 import events_pb2, registry_service_pb2, worker_pb2
from registry.adapters.repository import Stored
from registry.entrypoints.fleet_metrics import FleetCollector
from registry.service.listing import predicate
from registry.service.view import WatchClosed, WatchOverflow, WorkerView

W = worker_pb2


def stored(n: int, revision: int, status: int = W.WORKER_STATUS_RUNNING, **fields: object) -> Stored:
    worker = W.Worker(id=f"w-{n:03d}", name=f"n{n}", region="us-east-1", status=status,  # type: ignore[arg-type]
                      **fields)  # type: ignore[arg-type]
    return Stored(worker, revision)


def page_ids(view: WorkerView, after: str, pred: Callable[[W.Worker], bool], limit: int) -> tuple[list[str], bool]:
    parts, last, more = view.page(after, pred, limit)
    ids = [registry_service_pb2.GetWorkerResponse.FromString(p).worker.id for p in parts]
    assert last == (ids[-1] if ids else "")
    return ids, more


def test_newer_revision_wins_and_order_is_by_id() -> None:
    view = WorkerView()
    for n in (5, 1, 3):
        view.apply(stored(n, 10))
    view.apply(stored(3, 9, W.WORKER_STATUS_STOPPED))  # an older watch entry after a local write
    assert view.get("w-003").worker.status == W.WORKER_STATUS_RUNNING  # type: ignore[union-attr]
    view.apply(stored(3, 11, W.WORKER_STATUS_STOPPED))
    assert view.get("w-003").worker.status == W.WORKER_STATUS_STOPPED  # type: ignore[union-attr]
    assert page_ids(view, "", lambda w: True, 2) == (["w-001", "w-003"], True)
    assert page_ids(view, "w-003", lambda w: True, 2) == (["w-005"], False)


def test_filters() -> None:
    view = WorkerView()
    view.apply(stored(1, 1, tags={"team": "a"}))
    view.apply(stored(2, 2, W.WORKER_STATUS_TERMINATED))
    view.apply(stored(3, 3, W.WORKER_STATUS_STOPPED, tags={"team": "b"}))
    req = registry_service_pb2.ListWorkersRequest

    def ids(r: registry_service_pb2.ListWorkersRequest) -> list[str]:
        return page_ids(view, "", predicate(r), 10)[0]

    assert ids(req()) == ["w-001", "w-003"]
    assert ids(req(show_terminated=True)) == ["w-001", "w-002", "w-003"]
    assert ids(req(statuses=[W.WORKER_STATUS_TERMINATED])) == ["w-002"]
    assert ids(req(tags={"team": "b"})) == ["w-003"]
    assert ids(req(name_prefix="n1")) == ["w-001"]
    assert ids(req(region="eu-west-1")) == []


def test_pages_skip_hidden_workers_and_say_whether_more_follow() -> None:
    view = WorkerView()
    for n, status in enumerate([W.WORKER_STATUS_RUNNING, W.WORKER_STATUS_TERMINATED, W.WORKER_STATUS_RUNNING,
                                W.WORKER_STATUS_STOPPED, W.WORKER_STATUS_TERMINATED, W.WORKER_STATUS_TERMINATED]):
        view.apply(stored(n, 1, status))
    visible = predicate(registry_service_pb2.ListWorkersRequest())
    assert page_ids(view, "", visible, 2) == (["w-000", "w-002"], True)  # a hidden worker inside the page
    assert page_ids(view, "w-000", visible, 2) == (["w-002", "w-003"], False)  # only hidden ones after it
    assert page_ids(view, "w-002", visible, 1) == (["w-003"], False)
    assert page_ids(view, "w-003", visible, 5) == ([], False)
    stopped = predicate(registry_service_pb2.ListWorkersRequest(statuses=[W.WORKER_STATUS_STOPPED]))
    assert page_ids(view, "", stopped, 1) == (["w-003"], False)
    everything = predicate(registry_service_pb2.ListWorkersRequest(show_terminated=True))
    assert page_ids(view, "w-003", everything, 1) == (["w-004"], True)


def test_encoded_is_field_one_and_follows_changes() -> None:
    view = WorkerView()
    view.apply(stored(1, 1))
    worker = view.get("w-001").worker  # type: ignore[union-attr]
    response = registry_service_pb2.GetWorkerResponse.FromString(view.encoded(worker))
    assert response.worker == worker
    view.apply(stored(1, 2, W.WORKER_STATUS_STOPPED))
    changed = view.get("w-001").worker  # type: ignore[union-attr]
    assert registry_service_pb2.GetWorkerResponse.FromString(view.encoded(changed)).worker.status == \
        W.WORKER_STATUS_STOPPED


async def test_watchers_get_changes_once_and_end_on_close() -> None:
    view = WorkerView()
    sub = view.subscribe()
    first = stored(1, 1)
    first.pending = outbox_pb2.PendingWorkerEvent(type=events_pb2.WORKER_EVENT_TYPE_CREATED)
    view.apply(first)
    view.apply(stored(1, 2))  # the outbox cleared: same state, not a change
    change = await sub.next()
    assert change.event_type == events_pb2.WORKER_EVENT_TYPE_CREATED and sub.queue.empty()
    waiting = asyncio.create_task(sub.next())
    await asyncio.sleep(0)
    view.close()
    with pytest.raises(WatchClosed):
        await waiting
    with pytest.raises(WatchClosed):
        view.subscribe()


async def test_a_watcher_that_falls_behind_is_told() -> None:
    view = WorkerView()
    sub = view.subscribe(maxsize=2)
    for revision in range(1, 5):
        view.apply(stored(1, revision, cpu_utilization=float(revision)))
    with pytest.raises(WatchOverflow):
        await sub.next()


def test_fleet_gauges() -> None:
    view = WorkerView()
    view.apply(stored(1, 1, cpu_utilization=97.5, system_status_check=W.STATUS_CHECK_IMPAIRED))
    view.apply(stored(2, 2, W.WORKER_STATUS_TERMINATED))
    registry = CollectorRegistry()
    registry.register(FleetCollector(view))
    text = generate_latest(registry).decode()
    assert 'cmlmon_worker_cpu_utilization_percent{name="n1",region="us-east-1",worker_id="w-001"} 97.5' in text
    assert 'check="system",name="n1",region="us-east-1",value="impaired",worker_id="w-001"} 1.0' in text
    assert 'cmlmon_workers{region="us-east-1",status="terminated"} 1.0' in text
    assert 'worker_id="w-002"' not in text
