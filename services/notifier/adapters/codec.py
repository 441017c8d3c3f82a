"""Protobuf messages <-> the notifier's domain types."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from cml.monitor.v1 import alert_pb2, events_pb2, worker_pb2
from notifier.domain.model import AlertState, Transition, WorkerRef
from notifier.domain.model import Sample as DomainSample
from notifier.domain.payloads import AlertView

# What a Timestamp may hold (0001-01-01 to 9999-12-31 UTC). The wire carries any int64: a time outside this
# range would be accepted here, stored in an alert, and then fail every later conversion back to a Timestamp.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


def ts_valid(ts: Timestamp) -> bool:
    return _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS and 0 <= ts.nanos < 1_000_000_000


def ts_seconds(ts: Timestamp) -> float | None:
    """Seconds since the epoch; None when unset or not a valid Timestamp (the caller's fallback applies)."""
    seconds, nanos = ts.seconds, ts.nanos  # read once: every sample comes through here
    if (seconds == 0 and nanos == 0) or not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos < 1_000_000_000):
        return None
    return seconds + nanos / 1e9


def set_ts(ts: Timestamp, value: float | None) -> None:
    if value is not None:
        ts.FromNanoseconds(int(value * 1e9))


def sample_from_proto(msg: events_pb2.MetricSample, received_at: float) -> DomainSample:
    return DomainSample(  # positional, in Sample's field order (keywords cost a fifth of this; test_codec pins it)
        msg.worker_id,
        msg.region,
        msg.instance_id,
        ts_seconds(msg.observe_time) or received_at,  # at
        msg.status,
        msg.cpu_utilization if msg.HasField("cpu_utilization") else None,  # cpu
        msg.memory_utilization if msg.HasField("memory_utilization") else None,  # memory
        msg.system_status_check,  # system_check
        msg.instance_status_check,  # instance_check
        msg.instance_missing,
        msg.poll_interval_seconds,
    )


def worker_from_proto(worker: worker_pb2.Worker) -> WorkerRef:
    return WorkerRef(
        worker_id=worker.id, name=worker.name, instance_id=worker.instance_id, region=worker.region,
        tags=dict(worker.tags), status=worker.status,
        poll_interval_seconds=worker.poll_interval_seconds, instance_type=worker.instance_type,
        requested_status=worker.requested_status, requested_at=ts_seconds(worker.requested_time),
        state_reason=worker.state_reason,
    )


_SEVERITY: dict[str, alert_pb2.AlertSeverity] = {
    "info": alert_pb2.ALERT_SEVERITY_INFO, "warning": alert_pb2.ALERT_SEVERITY_WARNING,
    "critical": alert_pb2.ALERT_SEVERITY_CRITICAL}
_SEVERITY_NAME: dict[int, str] = {int(v): k for k, v in _SEVERITY.items()}


def alert_to_proto(state: AlertState, *, firing: bool, transition_id: str = "") -> alert_pb2.Alert:
    msg = alert_pb2.Alert(
        id=state.key, worker_id=state.worker_id, worker_name=state.worker_name, instance_id=state.instance_id,
        region=state.region, rule=state.rule,
        severity=_SEVERITY.get(state.severity, alert_pb2.ALERT_SEVERITY_UNSPECIFIED),
        state=alert_pb2.ALERT_STATE_FIRING if firing else alert_pb2.ALERT_STATE_RESOLVED,
        summary=state.summary, silenced=state.silenced, transition_id=transition_id,
    )
    if state.value is not None:
        msg.value = state.value
    if state.threshold is not None:
        msg.threshold = state.threshold
    set_ts(msg.start_time, state.start_time)
    if not firing:
        set_ts(msg.end_time, state.end_time)
    return msg


def transition_to_proto(transition: Transition, transition_id: str) -> alert_pb2.Alert:
    return alert_to_proto(transition.state, firing=transition.kind == "firing", transition_id=transition_id)


def view_from_proto(msg: alert_pb2.Alert) -> AlertView:
    return AlertView(
        alert_id=msg.id, transition_id=msg.transition_id,
        status="firing" if msg.state == alert_pb2.ALERT_STATE_FIRING else "resolved",
        worker_id=msg.worker_id, worker_name=msg.worker_name, instance_id=msg.instance_id, region=msg.region,
        rule=msg.rule, severity=_SEVERITY_NAME.get(msg.severity, "warning"),
        value=msg.value if msg.HasField("value") else None,
        threshold=msg.threshold if msg.HasField("threshold") else None,
        summary=msg.summary, start_time=ts_seconds(msg.start_time), end_time=ts_seconds(msg.end_time),
        silenced=msg.silenced,
    )


def view_from_state(state: AlertState) -> AlertView:
    """A firing alert as it stands in the state store (for re-sending it; no transition id)."""
    return view_from_proto(alert_to_proto(state, firing=True))
