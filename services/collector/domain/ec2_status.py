"""A DescribeInstanceStatus entry as the collector's InstanceState; EC2's words become the contract's enums
here (through cmlmon_core.status), so a sample carries the status and no consumer maps EC2 states again."""

from __future__ import annotations

from typing import Any

from cml.monitor.v1 import worker_pb2
from cmlmon_core.status import status_check, worker_status
from collector.domain.model import InstanceState


def from_status_item(item: dict[str, Any]) -> InstanceState:
    """One `InstanceStatuses` entry of a DescribeInstanceStatus answer."""
    state_name = str((item.get("InstanceState") or {}).get("Name") or "")
    return InstanceState(
        instance_id=str(item.get("InstanceId", "")),
        status=worker_status(state_name),
        ec2_state=state_name,
        system_check=status_check((item.get("SystemStatus") or {}).get("Status")),
        instance_check=status_check((item.get("InstanceStatus") or {}).get("Status")),
    )


def missing(instance_id: str) -> InstanceState:
    """EC2 does not know the instance (not found, malformed id, or long gone): it counts as terminated."""
    return InstanceState(instance_id=instance_id, status=worker_pb2.WORKER_STATUS_TERMINATED, missing=True)
