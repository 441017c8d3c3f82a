"""The one place that wires the registry: real adapters by default, fakes when a test passes them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from nats.js import JetStreamContext

from cmlmon_core.aws import AwsClients
from registry.adapters.ec2 import AwsEc2, Ec2
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


async def bootstrap(settings: RegistrySettings, js: JetStreamContext, *, repo: WorkerRepository | None = None,
                    ec2: Ec2 | None = None, publisher: EventPublisher | None = None,
                    on_saved: SavedHook | None = None) -> Wiring:
    aws: AwsClients | None = None
    if ec2 is None:
        aws = AwsClients(settings)
        ec2 = AwsEc2(aws)
    repo = repo or await KvWorkerRepository.open(js)
    publisher = publisher or JetStreamEventPublisher(js)
    registry = Registry(repo, ec2, publisher, WorkerView(),
                        RegistryOptions(missing_grace_seconds=settings.registry_missing_grace_seconds),
                        on_saved=on_saved)
    secret = settings.registry_page_token_secret.encode() or await repo.shared_secret(secrets.token_bytes(32))
    registry.page_tokens = PageTokens(secret)
    return Wiring(registry, aws)
