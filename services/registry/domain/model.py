"""Pure rules of a worker's life: which calls make sense in which status, how an
observation changes a worker, and which lifecycle event a change is. No I/O here."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from cml.monitor.internal.v1 import outbox_pb2
from cml.monitor.v1 import events_pb2, worker_pb2

Status = worker_pb2.WorkerStatus
EventType = events_pb2.WorkerEventType

PENDING = worker_pb2.WORKER_STATUS_PENDING
RUNNING = worker_pb2.WORKER_STATUS_RUNNING
STOPPING = worker_pb2.WORKER_STATUS_STOPPING
STOPPED = worker_pb2.WORKER_STATUS_STOPPED
SHUTTING_DOWN = worker_pb2.WORKER_STATUS_SHUTTING_DOWN
TERMINATED = worker_pb2.WORKER_STATUS_TERMINATED
UNSPECIFIED = worker_pb2.WORKER_STATUS_UNSPECIFIED

# The statuses a worker passes through on its way to a requested one: an observed change along that path was
# caused by a registry call (event.requested = true); anything else happened to the worker on its own.
_PATH_TO: dict[Status, frozenset[Status]] = {
    RUNNING: frozenset({PENDING, RUNNING}),
    STOPPED: frozenset({STOPPING, STOPPED}),
    TERMINATED: frozenset({SHUTTING_DOWN, TERMINATED}),
}

EVENT_SUFFIX: dict[EventType, str] = {
    events_pb2.WORKER_EVENT_TYPE_CREATED: "created",
    events_pb2.WORKER_EVENT_TYPE_IMPORTED: "imported",
    events_pb2.WORKER_EVENT_TYPE_STARTED: "started",
    events_pb2.WORKER_EVENT_TYPE_STOPPED: "stopped",
    events_pb2.WORKER_EVENT_TYPE_STATUS_CHANGED: "status_changed",
    events_pb2.WORKER_EVENT_TYPE_TERMINATED: "terminated",
}

OWNER_TAG = "cmlmon:worker-id"
REQUEST_TAG = "cmlmon:request-token"
RESERVED_TAG_PREFIXES = ("aws:", "cmlmon:")
# Keys under the reserved prefix that people set on purpose: the autopilot reads them, the registry never writes.
USER_TAGS = frozenset({"cmlmon:autostop", "cmlmon:offhours"})


def reserved_tag(key: str) -> bool:
    return key.lower().startswith(RESERVED_TAG_PREFIXES) and key.lower() not in USER_TAGS


def created_worker_id(request_id: str) -> str:
    """Worker id of a CreateWorker call: derived from request_id, so a retry lands on the same key."""
    return "w-" + hashlib.sha256(b"create\0" + request_id.encode()).hexdigest()[:20]


def imported_worker_id() -> str:
    return "w-" + secrets.token_hex(10)


def client_token(request_id: str) -> str:
    """RunInstances ClientToken (at most 64 ASCII characters) for a request id."""
    return "cmlmon-" + hashlib.sha256(b"token\0" + request_id.encode()).hexdigest()[:48]


def new_event_id() -> str:
    return uuid.uuid4().hex


class TransitionRefused(Exception):
    """The call makes no sense in the worker's current status."""


def start_needed(status: Status) -> bool:
    """True when StartWorker must call EC2; False when the worker is already (going) up."""
    if status in (PENDING, RUNNING):
        return False
    if status == STOPPED:
        return True
    raise TransitionRefused(f"cannot start a worker that is {Status.Name(status)}")


def stop_needed(status: Status) -> bool:
    if status in (STOPPING, STOPPED):
        return False
    if status in (PENDING, RUNNING):
        return True
    raise TransitionRefused(f"cannot stop a worker that is {Status.Name(status)}")


def terminate_needed(status: Status) -> bool:
    """Terminating a terminated (or terminating) worker succeeds and changes nothing."""
    return status not in (SHUTTING_DOWN, TERMINATED)


@dataclass(slots=True)
class Change:
    """A new state of a worker and, when it is one, the lifecycle event it makes."""

    worker: worker_pb2.Worker
    event_type: EventType = events_pb2.WORKER_EVENT_TYPE_UNSPECIFIED
    previous_status: Status = UNSPECIFIED
    requested: bool = False
    principal: str = ""  # who asked for it, when a call did

    @property
    def has_event(self) -> bool:
        return self.event_type != events_pb2.WORKER_EVENT_TYPE_UNSPECIFIED


def observed_change_event(previous: Status, new: Status) -> EventType:
    if new == previous:
        return events_pb2.WORKER_EVENT_TYPE_UNSPECIFIED
    if new == TERMINATED:
        return events_pb2.WORKER_EVENT_TYPE_TERMINATED
    return events_pb2.WORKER_EVENT_TYPE_STATUS_CHANGED


def was_requested(worker: worker_pb2.Worker, new_status: Status) -> bool:
    return new_status in _PATH_TO.get(worker.requested_status, frozenset())


def leaves_requested_path(worker: worker_pb2.Worker, sample: events_pb2.MetricSample) -> bool:
    """The sample moves a worker that was asked for a status off the way there (a start that fell back to
    stopped): EC2's reason for it is worth asking for."""
    return bool(worker.requested_status and sample.status and sample.status != worker.status
                and sample.instance_id == worker.instance_id and not was_requested(worker, sample.status))


def apply_sample(worker: worker_pb2.Worker, sample: events_pb2.MetricSample, grace_seconds: float,
                 state_reason: str = "") -> Change | None:
    """The worker after an observation, or None when the sample changes nothing we keep (stale, foreign,
    or about a terminated worker). A status change records state_reason (EC2's, when it was asked for)."""
    if worker.status == TERMINATED or sample.instance_id != worker.instance_id:
        return None
    if worker.HasField("last_seen_time") and _ts(sample.observe_time) < _ts(worker.last_seen_time):
        return None  # an older observation delivered late (two collectors) must not undo a newer one
    new = worker_pb2.Worker()
    new.CopyFrom(worker)
    new.last_seen_time.CopyFrom(sample.observe_time)
    if sample.instance_missing:
        if not new.HasField("missing_since_time"):
            new.missing_since_time.CopyFrom(sample.observe_time)
        if _ts(sample.observe_time) - _ts(new.missing_since_time) >= grace_seconds:
            new.status = TERMINATED
    else:
        new.ClearField("missing_since_time")
        # UNSPECIFIED: an EC2 state the collector does not know; keep the status we have.
        if sample.status and sample.status != new.status:
            new.status = sample.status
            new.state_reason = state_reason
        new.system_status_check = sample.system_status_check
        new.instance_status_check = sample.instance_status_check
        _copy_optional(new, sample, "cpu_utilization")
        _copy_optional(new, sample, "memory_utilization")
        if sample.monitoring_mode:
            new.monitoring_mode = sample.monitoring_mode
    event = observed_change_event(worker.status, new.status)
    return Change(new, event, worker.status, was_requested(worker, new.status))


def set_controller(worker: worker_pb2.Worker, controller: worker_pb2.CmlController) -> Change | None:
    """The worker with what a probe of its controller found, or None when that probe is older than the one
    recorded (two autopilot replicas) or the worker is terminated. Never a lifecycle event."""
    if worker.status == TERMINATED:
        return None
    if worker.HasField("controller") and _ts(controller.probe_time) < _ts(worker.controller.probe_time):
        return None
    new = worker_pb2.Worker()
    new.CopyFrom(worker)
    new.controller.CopyFrom(controller)
    return Change(new)


def _copy_optional(new: worker_pb2.Worker, sample: events_pb2.MetricSample, name: str) -> None:
    if sample.HasField(name):
        setattr(new, name, getattr(sample, name))
    else:
        new.ClearField(name)  # "no data" is unknown, never a stale old value


def _ts(ts: object) -> float:
    seconds = getattr(ts, "seconds", 0)
    nanos = getattr(ts, "nanos", 0)
    return float(seconds) + float(nanos) / 1e9


def pending_event(change: Change, when: datetime) -> outbox_pb2.PendingWorkerEvent:
    pending = outbox_pb2.PendingWorkerEvent(
        event_id=new_event_id(), type=change.event_type, previous_status=change.previous_status,
        requested=change.requested, principal=change.principal,
    )
    pending.occur_time.FromDatetime(when)
    return pending


def build_event(worker: worker_pb2.Worker, pending: outbox_pb2.PendingWorkerEvent
                ) -> events_pb2.WorkerEvent:
    event = events_pb2.WorkerEvent(
        event_id=pending.event_id, type=pending.type, previous_status=pending.previous_status,
        requested=pending.requested, principal=pending.principal,
    )
    event.worker.CopyFrom(worker)
    event.occur_time.CopyFrom(pending.occur_time)
    return event
