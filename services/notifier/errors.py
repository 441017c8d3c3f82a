"""The notifier's exception tree; adapters wrap nats/aiohttp errors into these."""

from __future__ import annotations


class NotifierError(Exception):
    """Base of every error the notifier raises on purpose."""


class StateConflict(NotifierError):
    """Another writer changed an alert's state since it was read (KV compare-and-set failed)."""


class StoreUnavailable(NotifierError):
    """The alert state store cannot be reached."""


class PublishFailed(NotifierError):
    """An alert transition or dead letter could not be published."""


class SilenceNotFound(NotifierError):
    """No silence has this id."""


class SinkConfigError(NotifierError):
    """The sinks configuration (environment or YAML file) is invalid."""


class DeliveryFailed(NotifierError):
    """One delivery attempt failed. retryable: worth another attempt; gone: the endpoint asked never to be
    called again (410); retry_after: seconds the receiver asked us to wait (429)."""

    def __init__(self, reason: str, *, retryable: bool = True, gone: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.gone = gone
        self.retry_after = retry_after
