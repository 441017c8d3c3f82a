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
from registry.adapters.licence import CmlLicenceReleaser
from registry.adapters.publisher import EventPublisher, JetStreamEventPublisher
from registry.adapters.repository import KvWorkerRepository, WorkerRepository
from registry.domain.paging import PageTokens
from registry.service.handlers import Registry, RegistryOptions
from registry.service.view import WorkerView
from registry.settings import RegistrySettings


@dataclass(slots=True)
class Wiring:
    registry: Registry
    aws: AwsClients | None
    http: httpx.AsyncClient | None = None  # for CML controllers; closed with the service


def cml_verify(settings: RegistrySettings) -> ssl.SSLContext | bool:
    if settings.cml_ca_bundle:
        return ssl.create_default_context(cafile=settings.cml_ca_bundle)
    return settings.cml_tls_verify


async def bootstrap(settings: RegistrySettings, js: JetStreamContext, *, repo: WorkerRepository | None = None,
                    ec2: Ec2 | None = None, publisher: EventPublisher | None = None) -> Wiring:
    aws: AwsClients | None = None
    if ec2 is None:
        aws = AwsClients(settings)
        ec2 = AwsEc2(aws)
    repo = repo or await KvWorkerRepository.open(js)
    publisher = publisher or JetStreamEventPublisher(js)
    registry = Registry(repo, ec2, publisher, WorkerView(),
                        RegistryOptions(missing_grace_seconds=settings.registry_missing_grace_seconds))
    secret = settings.registry_page_token_secret.encode() or await repo.shared_secret(secrets.token_bytes(32))
    registry.page_tokens = PageTokens(secret)
    http: httpx.AsyncClient | None = None
    probe: HttpCmlProbe | None = None
    if settings.cml_password.get_secret_value():
        http = httpx.AsyncClient(verify=cml_verify(settings))
        probe = HttpCmlProbe(http, Credentials(settings.cml_username, settings.cml_password.get_secret_value()),
                             timeout=settings.cml_timeout_seconds)
    registry.licences = CmlLicenceReleaser(probe, js)
    return Wiring(registry, aws, http)
