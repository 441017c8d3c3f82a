"""The stuck_transition rule: a worker asked to run, stop or terminate that EC2 has not brought there within
the time its instance type may take (metal types take minutes to start and stop). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cml.monitor.v1 import worker_pb2 as W
from cmlmon_core.status import status_label
from notifier.domain.model import WorkerRef

DEFAULT_OVERRIDES = "metal=1800"


@dataclass(frozen=True, slots=True)
class StuckPolicy:
    """Seconds a requested transition may take: `default_seconds`, or the override for the instance type, its
    size ("metal" in "c5.metal") or its family ("c5"), looked up in that order."""

    default_seconds: float = 600.0
    overrides: Mapping[str, float] = field(default_factory=dict)

    def timeout(self, instance_type: str) -> float:
        family, _, size = instance_type.partition(".")
        for key in (instance_type, size, family):
            if key and key in self.overrides:
                return self.overrides[key]
        return self.default_seconds


def parse_overrides(spec: str) -> dict[str, float]:
    """"metal=1800,p4d=1200" -> {"metal": 1800.0, "p4d": 1200.0}; ValueError names the bad entry."""
    out: dict[str, float] = {}
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        key, sep, raw = (x.strip() for x in item.partition("="))
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not sep or not key or seconds <= 0:
            raise ValueError(f"{item!r}: expected <instance type, size or family>=<seconds above 0>")
        out[key] = seconds
    return out


def is_stuck(worker: WorkerRef, now: float, policy: StuckPolicy) -> bool:
    """True when the worker is not where it was asked to be, longer than its instance type may take. A
    terminated worker is never stuck (there is nothing left to wait for; other rules speak for it)."""
    if worker.requested_status == W.WORKER_STATUS_UNSPECIFIED or worker.requested_at is None:
        return False
    if worker.status in (worker.requested_status, W.WORKER_STATUS_TERMINATED):
        return False
    return now - worker.requested_at > policy.timeout(worker.instance_type)


def stuck_summary(worker: WorkerRef, label: str, now: float) -> str:
    summary = (f"{label} was asked to be {status_label(worker.requested_status)} "
               f"{now - (worker.requested_at or now):.0f}s ago; EC2 still has it {status_label(worker.status)}")
    return f"{summary} (AWS: {worker.state_reason})" if worker.state_reason else summary
