"""An in-memory copy of every worker, kept current by a watch on the KV bucket (and by this process's own
writes, so a caller reads what it just wrote). ListWorkers pages and WatchWorkers streams are served from it."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cml.monitor.v1 import events_pb2, worker_pb2
from registry.adapters import wire
from registry.adapters.repository import Stored, WorkerRepository

log = logging.getLogger(__name__)

Predicate = Callable[[worker_pb2.Worker], bool]


@dataclass(frozen=True, slots=True)
class ViewChange:
    """One change of a worker as seen by the view, for WatchWorkers."""

    worker: worker_pb2.Worker
    event_type: events_pb2.WorkerEventType


class WatchClosed(Exception):
    """The view is shutting down: the stream ends normally."""


class WatchOverflow(Exception):
    """The watcher fell too far behind (its client reads too slowly); it must watch again."""


class Subscription:
    """Changes for one WatchWorkers stream; bounded so that a stalled client cannot grow memory forever."""

    def __init__(self, view: WorkerView, maxsize: int) -> None:
        self._view = view
        self.queue: asyncio.Queue[ViewChange | None] = asyncio.Queue(maxsize)
        self.overflowed = False
        self.closed = False

    def push(self, change: ViewChange) -> None:
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.overflowed = True

    def end(self) -> None:
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)  # wakes a waiting reader; a full queue has no waiting reader

    async def next(self) -> ViewChange:
        if self.closed:
            raise WatchClosed("registry is shutting down")
        if self.overflowed:
            raise WatchOverflow("watch fell behind")
        change = await self.queue.get()
        if change is None or self.closed:
            raise WatchClosed("registry is shutting down")
        return change

    def close(self) -> None:
        self._view.unsubscribe(self)


class WorkerView:
    def __init__(self) -> None:
        self._stored: dict[str, Stored] = {}
        self._encoded: dict[str, bytes] = {}  # a worker as field 1 of Get/ListWorkersResponse, made on first read
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
        self._encoded.pop(worker_id, None)
        if old is None:
            bisect.insort(self._ids, worker_id)
        if self._subs and (old is None or not _same_state(old.worker, stored.worker)):
            event_type = stored.pending.type if stored.pending is not None else events_pb2.WORKER_EVENT_TYPE_UNSPECIFIED
            change = ViewChange(stored.worker, event_type)
            for sub in list(self._subs):
                sub.push(change)

    def page(self, after_id: str, predicate: Predicate, limit: int) -> tuple[list[bytes], str, bool]:
        """Up to limit workers matching predicate with an id greater than after_id, in id order, as their cached
        encodings (field 1 of ListWorkersResponse); the last id on the page; whether more follow."""
        out: list[bytes] = []
        last = ""
        ids = self._ids
        stored = self._stored
        encoded = self._encoded
        for i in range(bisect.bisect_right(ids, after_id) if after_id else 0, len(ids)):
            worker_id = ids[i]
            worker = stored[worker_id].worker
            if predicate(worker):
                if len(out) == limit:
                    return out, last, True
                data = encoded.get(worker_id)
                if data is None:
                    data = encoded[worker_id] = wire.response_worker(worker)
                out.append(data)
                last = worker_id
        return out, last, False

    def encoded(self, worker: worker_pb2.Worker) -> bytes:
        """The worker serialized as field 1 (`worker`/`workers`) of GetWorkerResponse and ListWorkersResponse,
        cached until the worker changes: a page of 100 is then a join of bytes, not 100 message copies."""
        cached = self._encoded.get(worker.id)
        if cached is None:
            cached = wire.response_worker(worker)
            current = self._stored.get(worker.id)
            if current is not None and current.worker is worker:
                self._encoded[worker.id] = cached
        return cached

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
            sub.end()

    @property
    def watchers(self) -> int:
        return len(self._subs)

    async def follow(self, repo: WorkerRepository, retry_seconds: float = 1.0) -> None:
        """Keep the view current until cancelled; a watch that fails is started again (it replays the latest
        value of every key, which apply() takes or ignores by revision)."""
        while True:
            try:
                async for stored in repo.watch():
                    if stored is None:
                        if not self.ready.is_set():
                            log.info("worker view loaded", extra={"workers": len(self._ids)})
                        self.ready.set()
                    else:
                        self.apply(stored)
                log.warning("kv watch ended; starting it again")
            except Exception as exc:
                log.warning("kv watch failed; starting it again", extra={"error": repr(exc)})
            await asyncio.sleep(retry_seconds)


def _same_state(a: worker_pb2.Worker, b: worker_pb2.Worker) -> bool:
    return _without_etag(a) == _without_etag(b)


def _without_etag(worker: worker_pb2.Worker) -> bytes:
    copy = worker_pb2.Worker()
    copy.CopyFrom(worker)
    copy.etag = ""
    return copy.SerializeToString(deterministic=True)
