"""Alertmanager's clients must re-send what still fires: a firing alert is posted with endsAt a few periods
ahead and re-posted every period from the shared alert state, so Alertmanager never resolves a live alert by
timeout, and resolves within a few periods the alerts of a notifier that stopped (crashed, or cut off).

One replica re-sends at a time (a lease in KV); when it stops, another takes over within the lease's ttl plus a
period, inside the endsAt margin. At least once is enough: Alertmanager merges alerts with equal labels."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from notifier.adapters.codec import view_from_state
from notifier.adapters.lease import Lease
from notifier.adapters.state_kv import AlertStore
from notifier.domain.model import Phase
from notifier.domain.payloads import AlertView
from notifier.errors import NotifierError

log = logging.getLogger(__name__)


class Resend(Protocol):
    async def resend(self, alerts: list[AlertView]) -> None: ...


class Resender:
    def __init__(self, name: str, store: AlertStore, target: Resend, lease: Lease, period: float) -> None:
        self.name = name
        self._store = store
        self._target = target
        self._lease = lease
        self.period = period

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._loop(stop)
        finally:
            await self._lease.release()

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.resend_once()
            except NotifierError as exc:  # Alertmanager down or refusing: the next period tries again
                log.warning("alertmanager re-send failed", extra={"sink": self.name, "error": repr(exc)})
            except Exception:  # a bug here must not stop evaluation and delivery (the TaskGroup would)
                log.exception("alertmanager re-send crashed", extra={"sink": self.name})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.period)

    async def resend_once(self) -> int:
        """Re-send every delivered firing alert if this replica holds the lease; how many were sent."""
        if not await self._lease.hold():
            return 0
        # A silenced firing was never delivered: Alertmanager hears of it when its silence ends.
        firing = [view_from_state(s) for s in self._store.states() if s.phase is Phase.FIRING and not s.silenced]
        if firing:
            await self._target.resend(firing)
        return len(firing)
