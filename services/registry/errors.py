"""The registry's exception tree. Adapters wrap outside errors into these; the gRPC servicer maps them to
status codes (entrypoints/grpc_api.py), so no botocore or nats error ever reaches a client as UNKNOWN."""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every error the registry raises on purpose."""


class InvalidArgument(RegistryError):
    """A request field is malformed; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(RegistryError):
    """The worker (or the EC2 instance) does not exist."""


class AlreadyExists(RegistryError):
    """A live worker already has the instance."""


class FailedPrecondition(RegistryError):
    """The transition makes no sense in the worker's status."""


class Aborted(RegistryError):
    """A conditional change lost: the etag no longer matches."""


class Conflict(RegistryError):
    """A compare-and-set lost to a concurrent writer; retried internally, never shown to clients."""


class Unavailable(RegistryError):
    """A dependency (NATS, EC2) failed in a way worth retrying later."""


class Ec2Error(RegistryError):
    """EC2 refused the request; `code` is the AWS error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
