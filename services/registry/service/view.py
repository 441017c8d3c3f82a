"""An in-memory copy of every worker, kept current by a watch on the KV bucket (and by this process's own
writes, so a caller reads what it just wrote). ListWorkers pages and WatchWorkers streams are served from it."""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cml.monitor.v1 import events_pb2, worker_pb2
from registry.adapters.repository import Stored, WorkerRepository

log = logging.getLogger(__name__)

Predicate = Callable[[worker_pb2.Worker], bool]


@dataclass(frozen=True, slots=True)
class ViewChange:
    """One change of a worker as seen by the view, for WatchWorkers."""

    worker: worker_pb2.Worker
    event_type: events_pb2.WorkerEventType


class WatchClosed(Exception):
    """The view is shutting down or the watcher fell too far behind."""


class Subscription:
    """Changes for one WatchWorkers stream; bounded so that a stalled client cannot grow memory forever."""

    def __init__(self, view: WorkerView, maxsize: int) -> None:
        self._view = view
        self.queue: asyncio.Queue[ViewChange | None] = asyncio.Queue(maxsize)
        self.overflowed = False

    def push(self, change: ViewChange | None) -> None:
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.overflowed = True

    async def next(self) -> ViewChange:
        change = await self.queue.get()
        if change is None or self.overflowed:
            raise WatchClosed("watch ended")
        return change

    def close(self) -> None:
        self._view.unsubscribe(self)


class WorkerView:
    def __init__(self) -> None:
        self._stored: dict[str, Stored] = {}
        self._ids: list[str] = []  # sorted: the stable order of ListWorkers
        self._subs: set[Subscription] = set()
        self.ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, worker_id: str) -> Stored | None:
        return self._stored.get(worker_id)

    def apply(self, stored: Stored) -> None:
        """Take a newer state of a worker; an older revision (a watch entry behind a local write) is ignored."""
        worker_id = stored.worker.id
        old = self._stored.get(worker_id)
        if old is not None and old.revision >= stored.revision:
            return
        self._stored[worker_id] = stored
        if old is None:
            bisect.insort(self._ids, worker_id)
        if self._subs and (old is None or not _same_state(old.worker, stored.worker)):
            event_type = stored.pending.type if stored.pending is not None else events_pb2.WORKER_EVENT_TYPE_UNSPECIFIED
            change = ViewChange(stored.worker, event_type)
            for sub in list(self._subs):
                sub.push(change)

    def after(self, after_id: str, predicate: Predicate, limit: int) -> tuple[list[worker_pb2.Worker], bool]:
        """Up to limit workers matching predicate with an id greater than after_id, in id order, and whether
        more follow."""
        out: list[worker_pb2.Worker] = []
        for worker in self._iter_from(after_id):
            if predicate(worker):
                if len(out) == limit:
                    return out, True
                out.append(worker)
        return out, False

    def _iter_from(self, after_id: str) -> Iterator[worker_pb2.Worker]:
        start = bisect.bisect_right(self._ids, after_id) if after_id else 0
        ids = self._ids
        stored = self._stored
        for i in range(start, len(ids)):
            yield stored[ids[i]].worker

    def snapshot(self) -> list[Stored]:
        return [self._stored[i] for i in self._ids]

    def subscribe(self, maxsize: int = 1024) -> Subscription:
        if self._closed:
            raise WatchClosed("registry is shutting down")
        sub = Subscription(self, maxsize)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def close(self) -> None:
        """End every watch stream (shutdown)."""
        self._closed = True
        for sub in list(self._subs):
            sub.push(None)
            if sub.queue.full():
                sub.overflowed = True

    async def follow(self, repo: WorkerRepository) -> None:
        """Keep the view current until cancelled."""
        async for stored in repo.watch():
            if stored is None:
                if not self.ready.is_set():
                    log.info("worker view loaded", extra={"workers": len(self._ids)})
                self.ready.set()
            else:
                self.apply(stored)


def _same_state(a: worker_pb2.Worker, b: worker_pb2.Worker) -> bool:
    return _without_etag(a) == _without_etag(b)


def _without_etag(worker: worker_pb2.Worker) -> bytes:
    copy = worker_pb2.Worker()
    copy.CopyFrom(worker)
    copy.etag = ""
    return copy.SerializeToString(deterministic=True)
