"""Keeping one schedule per active (not terminated) worker: from lifecycle events as they come, and by
reconciliation against the registry, which heals drift both ways."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from cml.monitor.v1 import events_pb2, worker_pb2
from cmlmon_core import subjects
from collector import telemetry
from collector.adapters.schedules import ScheduleStore
from collector.codec import is_terminated, target_from_worker
from collector.domain.model import Target

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    written: int
    removed: int
    kept: int


class ScheduleKeeper:
    def __init__(self, store: ScheduleStore, default_interval: int, concurrency: int = 32) -> None:
        self._store = store
        self._default_interval = default_interval
        self._concurrency = concurrency

    async def apply_event(self, event: events_pb2.WorkerEvent) -> str:
        """Bring the worker's schedule in line with the event; returns what changed."""
        worker = event.worker
        if event.type == events_pb2.WORKER_EVENT_TYPE_TERMINATED or is_terminated(worker):
            await self._store.remove(worker.id)
            telemetry.SCHEDULE_CHANGES.labels("removed", "event").inc()
            return "removed"
        return await self.ensure(target_from_worker(worker, self._default_interval), cause="event")

    async def ensure(self, target: Target, cause: str) -> str:
        """Write the schedule unless the same one is there already (re-publishing would restart its timer),
        and poll once right away: the schedule's own first tick comes only one interval later."""
        subjects.poll_tick(target.region, target.worker_id)  # ValueError when either cannot be a subject token
        if await self._store.get(target.worker_id) == target:
            return "kept"
        await self._store.put(target)
        await self._store.tick_now(target)
        telemetry.SCHEDULE_CHANGES.labels("written", cause).inc()
        log.info("schedule written", extra={"worker_id": target.worker_id, "region": target.region,
                                            "interval": target.interval_seconds, "cause": cause})
        return "written"

    async def existing(self) -> set[str]:
        return await self._store.worker_ids()

    async def reconcile(self, live: Iterable[worker_pb2.Worker], existing: set[str] | None = None
                        ) -> ReconcileReport:
        """Make the schedules exactly those of the live workers.

        `existing` should be read before the registry is asked: a schedule written after that (a worker
        created meanwhile, missing from the registry's answer) is then not taken for a stale one."""
        wanted = {w.id: target_from_worker(w, self._default_interval) for w in live if not is_terminated(w)}
        if existing is None:
            existing = await self._store.worker_ids()
        stale = existing - wanted.keys()
        limit = asyncio.Semaphore(self._concurrency)

        async def ensure(target: Target) -> str:
            async with limit:
                try:
                    return await self.ensure(target, cause="reconcile")
                except ValueError as exc:  # one unschedulable worker must not stop the round (or the replica)
                    log.error("worker cannot be scheduled", extra={"worker_id": target.worker_id, "error": str(exc)})
                    return "refused"

        async def remove(worker_id: str) -> None:
            async with limit:
                await self._store.remove(worker_id)
                telemetry.SCHEDULE_CHANGES.labels("removed", "reconcile").inc()
                log.info("stale schedule removed", extra={"worker_id": worker_id})

        # Every change is tried, and settled, before a failure is raised: with a bare gather the first error
        # left the other writes running unwatched (their errors never retrieved) and skipped the removals.
        outcomes = await asyncio.gather(*(ensure(t) for t in wanted.values()), return_exceptions=True)
        removals = await asyncio.gather(*(remove(w) for w in stale), return_exceptions=True)
        for result in (*outcomes, *removals):
            if isinstance(result, BaseException):
                raise result
        return ReconcileReport(written=outcomes.count("written"), removed=len(stale), kept=outcomes.count("kept"))
