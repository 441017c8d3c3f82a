"""The notifier's vocabulary: workers as the notifier knows them, observations, and alert state.

Pure data: no grpc, nats or http here. Times are float seconds since the epoch. A worker's status and its
status checks are the contract's enums, so a renamed value is a type error here, not a silently dead rule."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple

from cml.monitor.v1 import worker_pb2


class Rule(StrEnum):
    """Rule names; also the last token of cml.alerts.<worker_id>.<rule>."""

    CPU_HIGH = "cpu_high"
    MEMORY_HIGH = "memory_high"
    STATUS_CHECK_IMPAIRED = "status_check_impaired"
    UNEXPECTED_STOP = "unexpected_stop"
    UNEXPECTED_TERMINATION = "unexpected_termination"
    SILENT = "silent"
    STUCK_TRANSITION = "stuck_transition"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITIES: dict[Rule, Severity] = {
    Rule.CPU_HIGH: Severity.WARNING,
    Rule.MEMORY_HIGH: Severity.WARNING,
    Rule.STATUS_CHECK_IMPAIRED: Severity.CRITICAL,
    Rule.UNEXPECTED_STOP: Severity.CRITICAL,
    Rule.UNEXPECTED_TERMINATION: Severity.CRITICAL,
    Rule.SILENT: Severity.WARNING,
    Rule.STUCK_TRANSITION: Severity.WARNING,
}

METRICS: dict[Rule, str] = {Rule.CPU_HIGH: "cpu", Rule.MEMORY_HIGH: "memory"}  # webhook "metric" field


class Phase(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


class TransitionKind(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class WorkerRef:
    """What the notifier knows of a worker (from lifecycle events, or only from a sample)."""

    worker_id: str
    name: str = ""
    instance_id: str = ""
    region: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    status: worker_pb2.WorkerStatus = worker_pb2.WORKER_STATUS_UNSPECIFIED
    poll_interval_seconds: int = 0
    instance_type: str = ""
    # Desired state: what the registry was last asked to make of the worker, and when.
    requested_status: worker_pb2.WorkerStatus = worker_pb2.WORKER_STATUS_UNSPECIFIED
    requested_at: float | None = None
    state_reason: str = ""  # EC2's reason for the last state change, when it gave one


class Sample(NamedTuple):
    """One metric sample, as the rules need it. None means "no data", never 0.

    A NamedTuple rather than a frozen dataclass like its neighbours: one is built for every sample, and a
    frozen dataclass's __init__ (a setattr call per field) costs three times as much."""

    worker_id: str
    region: str
    instance_id: str
    at: float
    status: worker_pb2.WorkerStatus = worker_pb2.WORKER_STATUS_UNSPECIFIED
    cpu: float | None = None
    memory: float | None = None
    system_check: worker_pb2.StatusCheck = worker_pb2.STATUS_CHECK_UNSPECIFIED
    instance_check: worker_pb2.StatusCheck = worker_pb2.STATUS_CHECK_UNSPECIFIED
    instance_missing: bool = False
    poll_interval_seconds: int = 0


@dataclass(frozen=True, slots=True)
class FiringPolicy:
    """A rule fires when M of the last N readings breach and the breach began at least for_seconds ago;
    it resolves when a reading is below threshold - hysteresis (missing data never resolves)."""

    for_seconds: float = 0.0
    min_samples: int = 2
    window_samples: int = 2
    hysteresis: float = 5.0

    def __post_init__(self) -> None:
        if self.min_samples > self.window_samples:
            raise ValueError("min_samples (M) cannot exceed window_samples (N)")


class Reading(NamedTuple):
    """One rule's view of one observation. breached None = no data (changes nothing). A NamedTuple for the
    reason Sample is one: three are built for every sample of a worker with an alert state."""

    at: float
    breached: bool | None
    cleared: bool = False
    value: float | None = None
    threshold: float | None = None
    summary: str = ""


@dataclass(frozen=True, slots=True)
class AlertState:
    """What is remembered per (worker, rule) in KV cml_alerts."""

    worker_id: str
    rule: str
    phase: Phase = Phase.INACTIVE
    window: tuple[bool, ...] = ()
    pending_since: float | None = None
    start_time: float | None = None
    end_time: float | None = None
    value: float | None = None
    threshold: float | None = None
    summary: str = ""
    severity: str = ""
    silenced: bool = False
    worker_name: str = ""
    instance_id: str = ""
    region: str = ""
    # Outbox: the id of a transition written here but not yet confirmed published to CML_ALERTS, and since when.
    unpublished: str = ""
    unpublished_since: float = 0.0

    @property
    def key(self) -> str:
        return alert_key(self.worker_id, self.rule)

    def to_json(self) -> bytes:
        data = asdict(self)
        data["window"] = list(self.window)
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> AlertState:
        data: dict[str, Any] = json.loads(raw)
        data["window"] = tuple(data.get("window", ()))
        data["phase"] = Phase(data.get("phase", Phase.INACTIVE))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_worker(self, worker: WorkerRef) -> AlertState:
        return replace(self, worker_name=worker.name or self.worker_name,
                       instance_id=worker.instance_id or self.instance_id, region=worker.region or self.region)


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change people hear about."""

    kind: TransitionKind
    state: AlertState
    at: float


def alert_key(worker_id: str, rule: str) -> str:
    return f"{worker_id}.{rule}"


def transition_id(key: str, revision: int, kind: TransitionKind | str) -> str:
    """Deterministic per (previous KV revision, kind): two replicas computing the same transition from the
    same state publish the same Nats-Msg-Id, and JetStream keeps one."""
    return f"{key}.{revision}.{kind}"
