"""The autopilot's exception tree: adapters wrap httpx, grpc and nats errors into these."""

from __future__ import annotations

import grpc


class AutopilotError(Exception):
    """Base of every error the autopilot raises on purpose."""


class RegistryCallFailed(AutopilotError):
    """A call to the registry failed; the message names the gRPC status, `code` holds it when there was one."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class PublishFailed(AutopilotError):
    """An event or alert could not be published to JetStream."""
