"""What `cmlmon status` concludes from the workers and the alerts: counts, and whether samples still arrive.
Pure: the caller fetches, this decides."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from cml.monitor.v1 import alert_pb2, worker_pb2
from cmlmon_cli.formatting import short_name, ts_seconds

# A worker whose newest sample is older than this many poll intervals is no longer being observed.
STALE_INTERVALS = 3
DEFAULT_INTERVAL = 300


@dataclass(frozen=True)
class Staleness:
    """The worker whose newest sample is the oldest, and the workers past STALE_INTERVALS of their interval."""

    oldest_id: str = ""
    oldest_name: str = ""
    oldest_age: float | None = None  # seconds; None when no worker was ever observed
    never_seen: int = 0
    stale: list[str] = field(default_factory=list)  # worker ids


@dataclass(frozen=True)
class FleetSummary:
    total: int
    by_status: dict[str, int]
    by_region: dict[str, dict[str, int]]  # region -> status -> count
    firing: int
    by_severity: dict[str, int]
    silenced: int
    samples: Staleness


def staleness(workers: Sequence[worker_pb2.Worker], now: float) -> Staleness:
    """A worker that was never observed is judged from when it was recorded: a new worker is not stale until
    it has had its chances to be polled."""
    oldest: tuple[float, worker_pb2.Worker] | None = None
    stale: list[str] = []
    never = 0
    for w in workers:
        if w.status == worker_pb2.WORKER_STATUS_TERMINATED:
            continue
        seen = ts_seconds(w.last_seen_time)
        if seen is None:
            never += 1
        elif oldest is None or seen < oldest[0]:
            oldest = (seen, w)
        since = seen if seen is not None else ts_seconds(w.create_time)
        interval = w.poll_interval_seconds or DEFAULT_INTERVAL
        if since is not None and now - since > STALE_INTERVALS * interval:
            stale.append(w.id)
    if oldest is None:
        return Staleness(never_seen=never, stale=stale)
    seen, w = oldest
    return Staleness(w.id, w.name, round(max(0.0, now - seen), 1), never, stale)


def summarize(workers: Sequence[worker_pb2.Worker], alerts: Sequence[alert_pb2.Alert], now: float
              ) -> FleetSummary:
    statuses = Counter(short_name(worker_pb2.WorkerStatus, w.status) for w in workers)
    regions: dict[str, Counter[str]] = {}
    for w in workers:
        regions.setdefault(w.region, Counter())[short_name(worker_pb2.WorkerStatus, w.status)] += 1
    firing = [a for a in alerts if a.state == alert_pb2.ALERT_STATE_FIRING]
    severities = Counter(short_name(alert_pb2.AlertSeverity, a.severity) for a in firing)
    return FleetSummary(
        total=len(workers),
        by_status=dict(sorted(statuses.items())),
        by_region={r: dict(sorted(c.items())) for r, c in sorted(regions.items())},
        firing=len(firing),
        by_severity=dict(sorted(severities.items())),
        silenced=sum(1 for a in firing if a.silenced),
        samples=staleness(workers, now),
    )
