"""Periodic work every replica does: deliver alerts whose silence ended, and find workers gone silent.
Both are safe to run on every replica at once: each change is a compare-and-set on the alert's state."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cmlmon_core.lifecycle import stopped_within
from notifier import metrics
from notifier.adapters.last_sample import LastSampleSource
from notifier.domain import rules
from notifier.errors import NotifierError
from notifier.service.evaluator import Evaluator

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, evaluator: Evaluator, last_samples: LastSampleSource, *, default_interval: float,
                 silent_intervals: float, period: float, wake: asyncio.Event | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._evaluator = evaluator
        self._last = last_samples
        self._default_interval = default_interval
        self._intervals = silent_intervals
        self._period = period
        self._wake = wake or asyncio.Event()
        self._clock = clock
        # Silence is measured from when this process could have seen samples: right after a start (the whole
        # system starting, or the notifier restarting) the collectors get their intervals before anyone is
        # called silent.
        self._started = clock()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep_once()
            except NotifierError as exc:
                log.warning("sweep failed; next one retries", extra={"error": repr(exc)})
            except Exception:  # a bug here must not stop evaluation and delivery (the TaskGroup would)
                log.exception("sweep crashed; next one retries")
            self._wake.clear()
            await stopped_within(stop, self._period, wake=self._wake)

    async def sweep_once(self) -> None:
        await self._evaluator.publish_outbox()
        await self._evaluator.redeliver_unsilenced()
        await self.find_silent()
        metrics.FIRING.set(self._evaluator.firing_count())

    async def find_silent(self) -> None:
        now = self._clock()
        directory = self._evaluator.directory
        for worker in directory.running():
            interval = float(worker.poll_interval_seconds or self._default_interval)
            since = max(directory.running_since.get(worker.worker_id, now), self._started)
            local = directory.last_sample.get(worker.worker_id)
            if not rules.is_silent(local, since, now, interval, self._intervals):
                continue
            # This replica may just not have been given the samples: ask the stream.
            last = await self._last.last_sample_at(worker.region, worker.worker_id) if worker.region else None
            if last is not None:
                directory.last_sample[worker.worker_id] = max(last, local or 0.0)
            if rules.is_silent(last, since, now, interval, self._intervals):
                await self._evaluator.mark_silent(worker, now, now - (last or since))
