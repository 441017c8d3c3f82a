"""The status vocabulary: EC2 instance states and status-check values mapped to the contract's enums (the
one place that knows EC2's words), and the enums' labels for people and metrics. The collector maps what
DescribeInstanceStatus says before it publishes a sample, the registry what its own EC2 calls answer;
everything after that speaks `WorkerStatus` and `StatusCheck`.

Every documented value is mapped; anything else (a value AWS adds later) maps to UNSPECIFIED rather than
failing the caller, so a new EC2 state cannot stop monitoring."""

from __future__ import annotations

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from cml.monitor.v1 import worker_pb2

STATES: dict[str, worker_pb2.WorkerStatus] = {
    "pending": worker_pb2.WORKER_STATUS_PENDING,
    "running": worker_pb2.WORKER_STATUS_RUNNING,
    "stopping": worker_pb2.WORKER_STATUS_STOPPING,
    "stopped": worker_pb2.WORKER_STATUS_STOPPED,
    "shutting-down": worker_pb2.WORKER_STATUS_SHUTTING_DOWN,
    "terminated": worker_pb2.WORKER_STATUS_TERMINATED,
}

CHECKS: dict[str, worker_pb2.StatusCheck] = {
    "ok": worker_pb2.STATUS_CHECK_OK,
    "impaired": worker_pb2.STATUS_CHECK_IMPAIRED,
    "insufficient-data": worker_pb2.STATUS_CHECK_INSUFFICIENT_DATA,
    "initializing": worker_pb2.STATUS_CHECK_INITIALIZING,
    "not-applicable": worker_pb2.STATUS_CHECK_NOT_APPLICABLE,
}


def worker_status(state_name: str | None) -> worker_pb2.WorkerStatus:
    """The worker status of an EC2 instance state name ("running", ...); UNSPECIFIED for any other name."""
    return STATES.get((state_name or "").strip().lower(), worker_pb2.WORKER_STATUS_UNSPECIFIED)


def status_check(value: str | None) -> worker_pb2.StatusCheck:
    """The StatusCheck of an EC2 status-check value ("ok", ...); UNSPECIFIED for any other value."""
    return CHECKS.get((value or "").strip().lower(), worker_pb2.STATUS_CHECK_UNSPECIFIED)


def status_label(status: worker_pb2.WorkerStatus) -> str:
    """"running" for WORKER_STATUS_RUNNING: a label for metrics and messages, never compared by logic; a number
    from a newer proto becomes "unknown_<n>"."""
    return _label(worker_pb2.WorkerStatus, "WORKER_STATUS_", status)


def check_label(check: worker_pb2.StatusCheck) -> str:
    """"impaired" for STATUS_CHECK_IMPAIRED (same rules as status_label)."""
    return _label(worker_pb2.StatusCheck, "STATUS_CHECK_", check)


def _label(enum: EnumTypeWrapper, prefix: str, value: int) -> str:
    try:
        return enum.Name(value).removeprefix(prefix).lower()
    except ValueError:
        return f"unknown_{int(value)}"
