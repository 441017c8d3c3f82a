"""What the collector reasons about, free of protobuf, NATS and AWS types."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Status(Enum):
    """A worker's lifecycle status as the EC2 instance state says it."""

    UNSPECIFIED = "unspecified"
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"


class Check(Enum):
    """The value of one EC2 status check."""

    UNSPECIFIED = "unspecified"
    OK = "ok"
    IMPAIRED = "impaired"
    INSUFFICIENT_DATA = "insufficient-data"
    INITIALIZING = "initializing"
    NOT_APPLICABLE = "not-applicable"


class Monitoring(Enum):
    """CloudWatch monitoring of an instance; it sets the metric period."""

    UNKNOWN = "unknown"
    BASIC = "basic"
    DETAILED = "detailed"


@dataclass(frozen=True, slots=True)
class Target:
    """One worker to poll, as a tick names it."""

    worker_id: str
    region: str
    instance_id: str
    interval_seconds: int = 0
    monitoring: Monitoring = Monitoring.UNKNOWN
    instance_type: str = ""
    image_id: str = ""


@dataclass(frozen=True, slots=True)
class InstanceState:
    """What DescribeInstanceStatus says about one instance (or that it does not know it)."""

    instance_id: str
    status: Status
    ec2_state: str = ""
    system_check: Check = Check.UNSPECIFIED
    instance_check: Check = Check.UNSPECIFIED
    missing: bool = False

    @property
    def running(self) -> bool:
        return self.status is Status.RUNNING


@dataclass(frozen=True, slots=True)
class Observation:
    """One poll of one worker: the instance state and, when CloudWatch has them, CPU and memory."""

    target: Target
    state: InstanceState
    cpu: float | None = None
    memory: float | None = None
