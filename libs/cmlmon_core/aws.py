"""AWS clients through aioboto3, configured once from AwsSettings (endpoint, timeouts, retries).

Clients are async context managers; open one per region and keep it for the life of the service rather
than per call."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any, Protocol

import aioboto3
from botocore.config import Config

from cmlmon_core.settings import AwsSettings


def client_config(settings: AwsSettings) -> Config:
    return Config(
        connect_timeout=settings.aws_connect_timeout,
        read_timeout=settings.aws_read_timeout,
        retries={"max_attempts": settings.aws_max_attempts, "mode": "adaptive"},
        max_pool_connections=50,
    )


class ClientSource(Protocol):
    """Where per-region aioboto3 clients come from (AwsClients; a fake in unit tests)."""

    async def get(self, service: str, region: str) -> Any: ...


class AwsClients:
    """A cache of aioboto3 clients per (service, region), closed together."""

    def __init__(self, settings: AwsSettings, session: aioboto3.Session | None = None,
                 config: Config | None = None) -> None:
        self._settings = settings
        self._session = session or aioboto3.Session()
        # `config` adds to (and overrides) what the settings give, e.g. Config(parameter_validation=False).
        self._config = client_config(settings) if config is None else client_config(settings).merge(config)
        self._stack = AsyncExitStack()
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = asyncio.Lock()

    async def get(self, service: str, region: str) -> Any:
        key = (service, region)
        client = self._clients.get(key)
        if client is not None:
            return client
        async with self._lock:  # two first calls for one region must not open two clients
            if key not in self._clients:
                self._clients[key] = await self._stack.enter_async_context(
                    self._session.client(
                        service, region_name=region, endpoint_url=self._settings.aws_endpoint_url,
                        config=self._config, **self._settings.aws_credentials(),
                    )
                )
            return self._clients[key]

    async def __aenter__(self) -> AwsClients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        self._clients.clear()
