"""The one place that wires the registry: real adapters by default, fakes when a test passes them."""

from __future__ import annotations

import secrets
import ssl
from dataclasses import dataclass

import httpx
from nats.js import JetStreamContext

from cmlmon_core.aws import AwsClients
from cmlmon_core.cml import Credentials, HttpCmlProbe
from registry.adapters.ec2 import AwsEc2, Ec2
from registry.adapters.history import MetricHistory
from registry.adapters.licence import CmlLicenceReleaser
from registry.adapters.mongo import MongoWorkerRepository
from registry.adapters.publisher import EventPublisher, JetStreamEventPublisher
from registry.adapters.repository import KvWorkerRepository, WorkerRepository
from registry.domain.paging import PageTokens
from registry.service.handlers import Registry, RegistryOptions, SavedHook
from registry.service.view import WorkerView
from registry.settings import RegistrySettings


@dataclass(slots=True)
class Wiring:
    registry: Registry
    aws: AwsClients | None
    mongo: MongoWorkerRepository | None = None
    http: httpx.AsyncClient | None = None  # for CML controllers; closed with the service

    async def aclose(self) -> None:
        """Close the clients bootstrap opened (not the NATS connection: the caller owns it)."""
        if self.aws is not None:
            await self.aws.__aexit__(None, None, None)
        if self.mongo is not None:
            await self.mongo.close()
        if self.http is not None:
            await self.http.aclose()


async def open_repository(settings: RegistrySettings, js: JetStreamContext) -> WorkerRepository:
    """The store WORKER_STORE names; a MongoDB store waits (retrying with back-off) until it can be reached."""
    if settings.worker_store == "mongodb":
        return await MongoWorkerRepository.open(
            settings.mongodb_uri.get_secret_value(), settings.mongodb_database,
            server_selection_seconds=settings.mongodb_server_selection_seconds)
    return await KvWorkerRepository.open(js)


def cml_verify(settings: RegistrySettings) -> ssl.SSLContext | bool:
    if settings.cml_ca_bundle:
        return ssl.create_default_context(cafile=settings.cml_ca_bundle)
    return settings.cml_tls_verify


async def bootstrap(settings: RegistrySettings, js: JetStreamContext, *, repo: WorkerRepository | None = None,
                    ec2: Ec2 | None = None, publisher: EventPublisher | None = None,
                    history: MetricHistory | None = None, on_saved: SavedHook | None = None) -> Wiring:
    opened = repo is None
    repo = repo or await open_repository(settings, js)
    aws: AwsClients | None = None
    if ec2 is None:
        aws = AwsClients(settings)
        ec2 = AwsEc2(aws)
    publisher = publisher or JetStreamEventPublisher(js)
    registry = Registry(repo, ec2, publisher, WorkerView(),
                        RegistryOptions(missing_grace_seconds=settings.registry_missing_grace_seconds),
                        on_saved=on_saved)
    wiring = Wiring(registry, aws, repo if opened and isinstance(repo, MongoWorkerRepository) else None)
    try:
        secret = settings.registry_page_token_secret.encode() or await repo.shared_secret(secrets.token_bytes(32))
    except BaseException:
        await wiring.aclose()
        raise
    registry.page_tokens = PageTokens(secret)
    registry.history = history  # GetWorkerMetrics answers UNAVAILABLE without one
    if settings.cml_password.get_secret_value():
        wiring.http = httpx.AsyncClient(verify=cml_verify(settings))
        probe = HttpCmlProbe(wiring.http, Credentials(settings.cml_username,
                                                      settings.cml_password.get_secret_value()),
                             timeout=settings.cml_timeout_seconds)
    else:
        probe = None
    registry.licences = CmlLicenceReleaser(probe, js)
    return wiring
