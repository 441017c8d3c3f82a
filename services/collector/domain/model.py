"""What the collector reasons about, free of NATS and AWS types; statuses are the contract's enums."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from cml.monitor.v1 import worker_pb2

# A worker's status and an EC2 status check are the contract's enums (mapped from EC2's words once, in
# cmlmon_core.status): one vocabulary from the collector to the notifier.
Status = worker_pb2.WorkerStatus
Check = worker_pb2.StatusCheck


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
    system_check: Check = worker_pb2.STATUS_CHECK_UNSPECIFIED
    instance_check: Check = worker_pb2.STATUS_CHECK_UNSPECIFIED
    missing: bool = False

    @property
    def running(self) -> bool:
        return self.status == worker_pb2.WORKER_STATUS_RUNNING


@dataclass(frozen=True, slots=True)
class Readings:
    """What CloudWatch had for one instance: percent for CPU and memory, bytes per second for network traffic;
    None where it had no datapoint (unknown, not 0)."""

    cpu: float | None = None
    memory: float | None = None
    network_in: float | None = None
    network_out: float | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """One poll of one worker: the instance state and, when CloudWatch has them, CPU and memory (percent) and
    network traffic (bytes per second)."""

    target: Target
    state: InstanceState
    cpu: float | None = None
    memory: float | None = None
    network_in: float | None = None
    network_out: float | None = None
