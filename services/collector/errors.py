"""The collector's exception tree: botocore, NATS and gRPC errors are wrapped into these at the adapters."""

from __future__ import annotations

from collections.abc import Sequence


class CollectorError(Exception):
    """Base of every error the collector raises on purpose."""


class AwsError(CollectorError):
    """An AWS call failed (after retries when the failure was retryable)."""

    def __init__(self, action: str, region: str, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"{action} in {region} failed: {code}: {message}")
        self.action = action
        self.region = region
        self.code = code
        self.message = message
        self.retryable = retryable


class InstancesNotFound(AwsError):
    """DescribeInstanceStatus refused the call because it does not know some ids; the message names them."""

    def __init__(self, region: str, message: str, asked: Sequence[str]) -> None:
        super().__init__("DescribeInstanceStatus", region, "InvalidInstanceID.NotFound", message, retryable=False)
        self.asked = list(asked)


class ScheduleError(CollectorError):
    """Reading or writing a poll schedule in JetStream failed."""


class RegistryUnavailable(CollectorError):
    """The registry could not be asked for its workers."""
