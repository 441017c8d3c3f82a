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
    """A ListWorkers filter split in two: the status check, which a page answers from its rows without touching
    the worker message, and the checks that need the worker (region, name prefix, tags), if any."""

    status_ok: Callable[[int], bool]
    rest: Predicate | None = None

    def __call__(self, worker: worker_pb2.Worker) -> bool:
        return self.status_ok(worker.status) and (self.rest is None or self.rest(worker))


@dataclass(slots=True)
class _Row:
    """One worker in the id order of ListWorkers: what a page reads, kept in one small object so that a page
    walks ~page_size of these (one list, no dict lookups) instead of ids, dict entries and messages spread
    over memory (with 100,000 workers, cache misses are most of a page's cost)."""

    id: str
    stored: Stored
    status: int
    encoded: bytes | None = None  # the worker as field 1 of Get/ListWorkersResponse, made on first read


def _row_id(row: _Row) -> str:
    return row.id


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
        self._rows: list[_Row] = []  # sorted by id: the stable order of ListWorkers
        self._subs: set[Subscription] = set()
        self.ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, worker_id: str) -> Stored | None:
        row = self._by_id.get(worker_id)
        return None if row is None else row.stored

    def apply(self, stored: Stored) -> None:
        """Take a newer state of a worker; an older revision (a watch entry behind a local write) is ignored."""
        worker_id = stored.worker.id
        row = self._by_id.get(worker_id)
        old = None if row is None else row.stored
        if old is not None and old.revision >= stored.revision:
            return
        if row is None:
            row = self._by_id[worker_id] = _Row(worker_id, stored, stored.worker.status)
            rows = self._rows
            if not rows or rows[-1].id < worker_id:
                rows.append(row)
            else:
                bisect.insort(rows, row, key=_row_id)
        else:
            row.stored, row.status, row.encoded = stored, stored.worker.status, None
        if self._subs and (old is None or not _same_state(old.worker, stored.worker)):
            event_type = stored.pending.type if stored.pending is not None else events_pb2.WORKER_EVENT_TYPE_UNSPECIFIED
            change = ViewChange(stored.worker, event_type)
            for sub in list(self._subs):
                sub.push(change)

    def page(self, after_id: str, predicate: Predicate, limit: int) -> tuple[list[bytes], str, bool]:
        """Up to limit workers matching predicate with an id greater than after_id, in id order, as their cached
        encodings (field 1 of ListWorkersResponse); the last id on the page; whether more follow. A WorkerFilter's
        status check is answered from the rows; only its other checks (or a plain predicate) read the worker."""
        out: list[bytes] = []
        last = ""
        rows = self._rows
        if isinstance(predicate, WorkerFilter):
            status_ok, rest = predicate.status_ok, predicate.rest
        else:
            status_ok, rest = any_status, predicate
        for i in range(bisect.bisect_right(rows, after_id, key=_row_id) if after_id else 0, len(rows)):
            row = rows[i]
            if not status_ok(row.status) or (rest is not None and not rest(row.stored.worker)):
                continue
            if len(out) == limit:
                return out, last, True
            data = row.encoded
            if data is None:
                data = row.encoded = wire.response_worker(row.stored.worker)
            out.append(data)
            last = row.id
        return out, last, False

    def encoded(self, worker: worker_pb2.Worker) -> bytes:
        """The worker serialized as field 1 (`worker`/`workers`) of GetWorkerResponse and ListWorkersResponse,
        cached until the worker changes: a page of 100 is then a join of bytes, not 100 message copies."""
        row = self._by_id.get(worker.id)
        if row is not None and row.stored.worker is worker:
            if row.encoded is None:
                row.encoded = wire.response_worker(worker)
            return row.encoded
        return wire.response_worker(worker)

    def snapshot(self) -> list[Stored]:
        return [row.stored for row in self._rows]

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
                            log.info("worker view loaded", extra={"workers": len(self._rows)})
                        self.ready.set()
                    else:
                        self.apply(stored)
                log.warning("kv watch ended; starting it again")
            except Exception as exc:
                log.warning("kv watch failed; starting it again", extra={"error": repr(exc)})
            await asyncio.sleep(retry_seconds)


def any_status(status: int) -> bool:
    """The status check of a filter that takes every status."""
    return True


def _same_state(a: worker_pb2.Worker, b: worker_pb2.Worker) -> bool:
    return _without_etag(a) == _without_etag(b)


def _without_etag(worker: worker_pb2.Worker) -> bytes:
    copy = worker_pb2.Worker()
    copy.CopyFrom(worker)
    copy.etag = ""
    return copy.SerializeToString(deterministic=True)
