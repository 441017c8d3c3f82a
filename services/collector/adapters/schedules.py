"""Poll schedules as JetStream scheduled messages on CML_POLLS (one per worker, one message per subject).

A schedule is the message on `cml.polls.schedule.<id>` with headers `Nats-Schedule: <cron or @every>` and
`Nats-Schedule-Target: cml.polls.tick.<region>.<id>`; the server publishes its body (a PollTick) to the
target every n seconds. Publishing again replaces it; purging the subject stops it."""

from __future__ import annotations

import json
from typing import Any, Protocol

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from cml.monitor.v1 import events_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.telemetry import inject_trace
from cmlmon_core.topology import POLLS_STREAM
from collector.codec import target_from_tick, tick_from_target
from collector.domain.model import Target
from collector.domain.schedule import schedule_expression
from collector.errors import ScheduleError

SCHEDULE = "Nats-Schedule"
SCHEDULE_TARGET = "Nats-Schedule-Target"
_SCHEDULE_PREFIX = "cml.polls.schedule."


class ScheduleStore(Protocol):
    async def get(self, worker_id: str) -> Target | None:
        """The target the worker's schedule polls now, or None when it has no schedule."""
        ...

    async def put(self, target: Target) -> None:
        """Create or replace the worker's schedule."""
        ...

    async def tick_now(self, target: Target) -> None:
        """One tick right away (a schedule's first tick comes one interval after it is written)."""
        ...

    async def remove(self, worker_id: str) -> None:
        """Stop the worker's schedule and drop its pending tick; no-op when there is none."""
        ...

    async def worker_ids(self) -> set[str]:
        """Ids of every worker that has a schedule."""
        ...


def schedule_headers(target: Target) -> dict[str, str]:
    return {
        SCHEDULE: schedule_expression(target.interval_seconds),
        SCHEDULE_TARGET: subjects.poll_tick(target.region, target.worker_id),
    }


class JetStreamSchedules:
    def __init__(self, nc: Client, js: JetStreamContext, timeout: float = 5.0) -> None:
        self._nc = nc
        self._js = js
        self._timeout = timeout

    async def get(self, worker_id: str) -> Target | None:
        try:
            raw = await self._js.get_last_msg(POLLS_STREAM, subjects.poll_schedule(worker_id))
        except NotFoundError:
            return None
        except (NatsError, TimeoutError) as exc:
            raise ScheduleError(f"reading the schedule of {worker_id} failed: {exc!r}") from exc
        try:
            tick = messages.decode(events_pb2.PollTick, raw.data or b"", raw.headers)
        except messages.UndecodableMessage:
            return None  # not ours to keep: put() replaces it
        target = target_from_tick(tick)
        if (raw.headers or {}).get(SCHEDULE) != schedule_headers(target)[SCHEDULE]:
            return None
        return target

    async def put(self, target: Target) -> None:
        data, headers = messages.encode(tick_from_target(target), headers=schedule_headers(target))
        try:
            await self._js.publish(subjects.poll_schedule(target.worker_id), data, headers=headers,
                                   stream=POLLS_STREAM, timeout=self._timeout)
        except (NatsError, TimeoutError) as exc:
            raise ScheduleError(f"writing the schedule of {target.worker_id} failed: {exc!r}") from exc

    async def tick_now(self, target: Target) -> None:
        # The first poll after a lifecycle event continues that event's trace; the schedule's own ticks carry
        # none (they would join every poll of the worker's life to one trace).
        data, headers = messages.encode(tick_from_target(target), headers=inject_trace({}))
        try:
            await self._js.publish(subjects.poll_tick(target.region, target.worker_id), data, headers=headers,
                                   stream=POLLS_STREAM, timeout=self._timeout)
        except (NatsError, TimeoutError) as exc:
            raise ScheduleError(f"ticking {target.worker_id} failed: {exc!r}") from exc

    async def remove(self, worker_id: str) -> None:
        try:
            await self._js.purge_stream(POLLS_STREAM, subject=subjects.poll_schedule(worker_id))
            await self._js.purge_stream(POLLS_STREAM, subject=f"cml.polls.tick.*.{subjects.token(worker_id)}")
        except (NatsError, TimeoutError) as exc:
            raise ScheduleError(f"removing the schedule of {worker_id} failed: {exc!r}") from exc

    async def worker_ids(self) -> set[str]:
        """Subjects of CML_POLLS under cml.polls.schedule.*, paged as the server pages them."""
        ids: set[str] = set()
        offset = 0
        while True:
            request = {"subjects_filter": subjects.POLL_SCHEDULES_ALL, "offset": offset}
            reply = await self._api(f"$JS.API.STREAM.INFO.{POLLS_STREAM}", request)
            found: dict[str, int] = (reply.get("state") or {}).get("subjects") or {}
            ids.update(s.removeprefix(_SCHEDULE_PREFIX) for s in found)
            total = int(reply.get("total") or 0)
            offset += len(found)
            if not found or offset >= total:
                return ids

    async def _api(self, subject: str, request: dict[str, Any]) -> dict[str, Any]:
        try:
            msg = await self._nc.request(subject, json.dumps(request).encode(), timeout=self._timeout)
        except (NatsError, TimeoutError) as exc:
            raise ScheduleError(f"{subject} failed: {exc!r}") from exc
        reply: dict[str, Any] = json.loads(msg.data)
        if "error" in reply:
            raise ScheduleError(f"{subject} failed: {reply['error']}")
        return reply
