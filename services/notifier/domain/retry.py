"""Retry timing for deliveries: exponential backoff with full jitter, Retry-After honoured (capped)."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    initial_seconds: float = 0.5
    max_seconds: float = 60.0

    def delay(self, attempt: int, rand: float, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based); rand in [0, 1)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_seconds)
        ceiling = min(self.max_seconds, self.initial_seconds * 2.0 ** (attempt - 1))
        return ceiling / 2 + rand * ceiling / 2  # "equal jitter": never zero, never above the ceiling


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None
