"""EC2 instance states and status-check values mapped to the worker's terms.

Every documented value is mapped; anything else (a value AWS adds later) maps to UNSPECIFIED rather than
failing the poll, so a new EC2 state cannot stop monitoring."""

from __future__ import annotations

from typing import Any

from collector.domain.model import Check, InstanceState, Status

_STATES = {
    "pending": Status.PENDING,
    "running": Status.RUNNING,
    "stopping": Status.STOPPING,
    "stopped": Status.STOPPED,
    "shutting-down": Status.SHUTTING_DOWN,
    "terminated": Status.TERMINATED,
}

_CHECKS = {
    "ok": Check.OK,
    "impaired": Check.IMPAIRED,
    "insufficient-data": Check.INSUFFICIENT_DATA,
    "initializing": Check.INITIALIZING,
    "not-applicable": Check.NOT_APPLICABLE,
}


def map_state(name: str | None) -> Status:
    return _STATES.get((name or "").strip().lower(), Status.UNSPECIFIED)


def map_check(value: str | None) -> Check:
    return _CHECKS.get((value or "").strip().lower(), Check.UNSPECIFIED)


def from_status_item(item: dict[str, Any]) -> InstanceState:
    """One `InstanceStatuses` entry of a DescribeInstanceStatus answer."""
    state_name = str((item.get("InstanceState") or {}).get("Name") or "")
    return InstanceState(
        instance_id=str(item.get("InstanceId", "")),
        status=map_state(state_name),
        ec2_state=state_name,
        system_check=map_check((item.get("SystemStatus") or {}).get("Status")),
        instance_check=map_check((item.get("InstanceStatus") or {}).get("Status")),
    )


def missing(instance_id: str) -> InstanceState:
    """EC2 does not know the instance (not found, malformed id, or long gone): it counts as terminated."""
    return InstanceState(instance_id=instance_id, status=Status.TERMINATED, missing=True)
