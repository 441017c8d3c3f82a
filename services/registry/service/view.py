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
class WorkerFilter:
    """A ListWorkers filter split in two: the status check, which a page answers from the statuses alone (a
    whole page at once, with one set operation, when every worker on it passes), and the checks that need the
    worker (region, name prefix, tags), if any. allowed: the statuses shown (None: every status but hidden)."""

    allowed: frozenset[int] | None = None
    hidden: frozenset[int] = frozenset()
    rest: Predicate | None = None

    def status_ok(self, status: int) -> bool:
        return status not in self.hidden if self.allowed is None else status in self.allowed

    def statuses_ok(self, statuses: list[int]) -> bool:
        """Whether every one of these statuses passes."""
        return self.hidden.isdisjoint(statuses) if self.allowed is None else self.allowed.issuperset(statuses)

    def __call__(self, worker: worker_pb2.Worker) -> bool:
        return self.status_ok(worker.status) and (self.rest is None or self.rest(worker))


ANY_STATUS = WorkerFilter()


@dataclass(slots=True)
class _Row:
    """A worker as the view holds it: its stored state and that worker serialized as field 1 of
    Get/ListWorkersResponse (made when the state is taken: a page of 100 is then a join of bytes, not 100
    message copies, and GetWorker answers without serializing)."""

    stored: Stored
    encoded: bytes


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
        self._by_id: dict[str, _Row] = {}
        # The id order of ListWorkers, in parallel lists (index i is the same worker in each): a page is a few
        # slices of them, no Python loop over its rows (with 10,000-100,000 workers and a busy gRPC server, a
        # walk of 100 rows was most of a page's cost).
        self._ids: list[str] = []
        self._stored: list[Stored] = []
        self._statuses: list[int] = []
        self._encoded: list[bytes] = []
        self._subs: set[Subscription] = set()
        self.ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, worker_id: str) -> Stored | None:
        row = self._by_id.get(worker_id)
        return None if row is None else row.stored

    def apply(self, stored: Stored) -> None:
        """Take a newer state of a worker; an older revision (a watch entry behind a local write) is ignored."""
        worker = stored.worker
        worker_id = worker.id
        row = self._by_id.get(worker_id)
        old = None if row is None else row.stored
        if old is not None and old.revision >= stored.revision:
            return
        encoded = wire.response_worker(worker)
        ids = self._ids
        if row is None:
            self._by_id[worker_id] = _Row(stored, encoded)
            i = len(ids) if not ids or ids[-1] < worker_id else bisect.bisect_left(ids, worker_id)
            ids.insert(i, worker_id)
            self._stored.insert(i, stored)
            self._statuses.insert(i, worker.status)
            self._encoded.insert(i, encoded)
        else:
            row.stored, row.encoded = stored, encoded
            i = bisect.bisect_left(ids, worker_id)
            self._stored[i], self._statuses[i], self._encoded[i] = stored, worker.status, encoded
        if self._subs and (old is None or not _same_state(old.worker, worker)):
            event_type = stored.pending.type if stored.pending is not None else events_pb2.WORKER_EVENT_TYPE_UNSPECIFIED
            change = ViewChange(worker, event_type)
            for sub in list(self._subs):
                sub.push(change)

    def page(self, after_id: str, predicate: Predicate, limit: int) -> tuple[list[bytes], str, bool]:
        """Up to limit workers matching predicate with an id greater than after_id, in id order, as their
        encodings (field 1 of ListWorkersResponse); the last id on the page; whether more follow. A WorkerFilter
        with no checks beyond the status takes the next limit workers in one slice when all of them pass."""
        ids = self._ids
        start = bisect.bisect_right(ids, after_id) if after_id else 0
        filter_ = predicate if isinstance(predicate, WorkerFilter) else WorkerFilter(rest=predicate)
        if filter_.rest is None:
            end = min(start + limit, len(ids))
            if filter_.statuses_ok(self._statuses[start:end]):
                more = self._next_match(end, filter_) < len(ids)
                return self._encoded[start:end], ids[end - 1] if end > start else "", more
        out: list[bytes] = []
        last = ""
        i = self._next_match(start, filter_)
        while i < len(ids) and len(out) < limit:
            out.append(self._encoded[i])
            last = ids[i]
            i = self._next_match(i + 1, filter_)
        return out, last, i < len(ids)

    def _next_match(self, i: int, filter_: WorkerFilter) -> int:
        """The index of the first worker from i on that filter_ takes (len(self) when none does)."""
        statuses, stored, n = self._statuses, self._stored, len(self._ids)
        status_ok, rest = filter_.status_ok, filter_.rest
        while i < n and not (status_ok(statuses[i]) and (rest is None or rest(stored[i].worker))):
            i += 1
        return i

    def encoded(self, worker: worker_pb2.Worker) -> bytes:
        """The worker serialized as field 1 (`worker`/`workers`) of GetWorkerResponse and ListWorkersResponse:
        the view's own encoding when worker is the state it holds."""
        row = self._by_id.get(worker.id)
        if row is not None and row.stored.worker is worker:
            return row.encoded
        return wire.response_worker(worker)

    def snapshot(self) -> list[Stored]:
        return list(self._stored)

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
