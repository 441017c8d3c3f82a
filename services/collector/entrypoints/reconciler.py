"""Periodic reconciliation of the schedules against the registry (every replica runs it; it is idempotent)."""

from __future__ import annotations

import asyncio
import logging

from cmlmon_core.lifecycle import stopped_within
from collector import telemetry
from collector.adapters.registry import WorkerDirectory
from collector.errors import CollectorError
from collector.service.schedules import ScheduleKeeper

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, directory: WorkerDirectory, keeper: ScheduleKeeper, interval: float,
                 first_delay: float = 15.0) -> None:
        self._directory = directory
        self._keeper = keeper
        self._interval = interval
        self._first_delay = first_delay

    async def run(self, stop: asyncio.Event) -> None:
        if self._interval <= 0:
            return
        delay = min(self._first_delay, self._interval)
        while not await stopped_within(stop, delay):
            await self.once()
            delay = self._interval

    async def once(self) -> bool:
        try:
            existing = await self._keeper.existing()  # first: see ScheduleKeeper.reconcile
            live = await self._directory.live_workers()
            report = await self._keeper.reconcile(live, existing)
        except CollectorError as exc:
            telemetry.RECONCILE_RUNS.labels("failed").inc()
            log.warning("reconciliation skipped", extra={"error": str(exc)})
            return False
        telemetry.RECONCILE_RUNS.labels("ok").inc()
        log.info("schedules reconciled", extra={"written": report.written, "removed": report.removed,
                                                "kept": report.kept, "live": len(live)})
        return True
