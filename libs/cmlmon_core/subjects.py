"""NATS subjects of the contract (docs/architecture.md, "NATS topology"). Tokens are validated so that a worker id or
region can never inject a wildcard or an extra subject level."""

from __future__ import annotations

import re

WORKERS_ALL = "cml.workers.>"
POLLS_ALL = "cml.polls.>"
POLL_SCHEDULES_ALL = "cml.polls.schedule.*"
POLL_TICKS_ALL = "cml.polls.tick.>"
METRICS_ALL = "cml.metrics.>"
ALERTS_ALL = "cml.alerts.*.*"
DEADLETTER_ALL = "cml.deadletter.>"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def token(value: str, what: str = "token") -> str:
    """Return value if it is safe as one subject token, else raise ValueError."""
    if not _TOKEN.match(value):
        raise ValueError(f"{what} {value!r} is not a valid subject token")
    return value


def worker_event(worker_id: str, event: str) -> str:
    return f"cml.workers.{token(worker_id, 'worker id')}.{token(event, 'event')}"


def poll_schedule(worker_id: str) -> str:
    return f"cml.polls.schedule.{token(worker_id, 'worker id')}"


def poll_tick(region: str, worker_id: str) -> str:
    return f"cml.polls.tick.{token(region, 'region')}.{token(worker_id, 'worker id')}"


def metric(region: str, worker_id: str) -> str:
    return f"cml.metrics.{token(region, 'region')}.{token(worker_id, 'worker id')}"


def alert(worker_id: str, rule: str) -> str:
    return f"cml.alerts.{token(worker_id, 'worker id')}.{token(rule, 'rule')}"


def deadletter(sink: str, worker_id: str, rule: str) -> str:
    return f"cml.deadletter.{token(sink, 'sink')}.{token(worker_id, 'worker id')}.{token(rule, 'rule')}"
