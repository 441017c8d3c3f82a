"""The autopilot's exception tree: adapters wrap httpx, grpc and nats errors into these."""

from __future__ import annotations


class AutopilotError(Exception):
    """Base of every error the autopilot raises on purpose."""


class RegistryCallFailed(AutopilotError):
    """A call to the registry failed; the message names the gRPC status."""


class PublishFailed(AutopilotError):
    """An event or alert could not be published to JetStream."""
