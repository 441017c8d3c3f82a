"""Delivering one alert transition to one sink: bounded attempts with backoff, then a dead letter."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from notifier import metrics
from notifier.adapters.sinks import Sink
from notifier.domain.payloads import AlertView
from notifier.domain.retry import RetryPolicy
from notifier.errors import DeliveryFailed

log = logging.getLogger(__name__)
DeadLetter = Callable[[str, int], Awaitable[None]]


class Deliverer:
    def __init__(self, sink: Sink, policy: RetryPolicy, *, rand: Callable[[], float] = random.random,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.sink = sink
        self._policy = policy
        self._rand = rand
        self._sleep = sleep
        self.disabled_reason: str | None = None

    async def deliver(self, alert: AlertView, dead_letter: DeadLetter) -> str:
        """Return the outcome: delivered, silenced, dead_lettered or disabled. However long this takes, the
        caller keeps the transition's message alive (SinkConsumer)."""
        outcome = await self._deliver(alert, dead_letter)
        metrics.DELIVERIES.labels(sink=self.sink.name, outcome=outcome).inc()
        return outcome

    async def _deliver(self, alert: AlertView, dead_letter: DeadLetter) -> str:
        if alert.silenced:
            return "silenced"
        if self.disabled_reason is not None:
            await dead_letter(f"sink disabled: {self.disabled_reason}", 0)
            return "dead_lettered"
        attempt = 0
        while True:
            attempt += 1
            metrics.ATTEMPTS.labels(sink=self.sink.name).inc()
            try:
                await self.sink.send(alert)
                return "delivered"
            except DeliveryFailed as exc:
                failure = exc
            if failure.gone:
                self.disabled_reason = failure.reason
                log.error("sink endpoint is gone (410); sink disabled until restart",
                          extra={"sink": self.sink.name, "alert_id": alert.alert_id})
                await dead_letter(failure.reason, attempt)
                return "disabled"
            if not failure.retryable or attempt >= self._policy.max_attempts:
                log.error("delivery given up; dead-lettered",
                          extra={"sink": self.sink.name, "alert_id": alert.alert_id, "attempts": attempt,
                                 "reason": failure.reason})
                await dead_letter(f"{failure.reason} after {attempt} attempt(s)", attempt)
                return "dead_lettered"
            delay = self._policy.delay(attempt, self._rand(), failure.retry_after)
            log.info("delivery failed; retrying", extra={"sink": self.sink.name, "alert_id": alert.alert_id,
                                                         "attempt": attempt, "reason": failure.reason,
                                                         "retry_in": round(delay, 2)})
            await self._sleep(delay)
