"""The one place that wires the autopilot: real adapters by default, fakes when a test passes them."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import httpx
import yaml
from nats.js import JetStreamContext

from autopilot.adapters.addresses import PrivateIpAddresses, TagAddresses
from autopilot.adapters.publisher import DecisionPublisher, JetStreamDecisionPublisher
from autopilot.adapters.registry import GrpcRegistry, RegistryPort
from autopilot.adapters.state_kv import StateStore
from autopilot.domain.autostop import AutostopPolicy
from autopilot.domain.idle import IdlePolicy
from autopilot.domain.prices import price_table
from autopilot.domain.remediation import RemediationPolicy
from autopilot.entrypoints.samples import SampleConsumer, samples_durable
from autopilot.service.pilot import Pilot
from autopilot.service.remedy import Remediation
from autopilot.settings import AutopilotSettings
from cmlmon_core.aws import ClientSource
from cmlmon_core.cml import ControllerProbe, Credentials, HttpCmlProbe


def handling_seconds(settings: AutopilotSettings) -> float:
    """The longest a replica takes over one sample: a probe of the worker's controller twice plus the registry
    calls. It is the samples' AckWait, and how long a claimed stop waits for its replica before another one
    finishes it."""
    return 2 * settings.cml_probe_timeout_seconds + 2 * settings.registry_timeout_seconds + 10


def policy(settings: AutopilotSettings) -> AutostopPolicy:
    return AutostopPolicy(mode=settings.autostop_mode, grace_seconds=settings.autostop_grace_seconds,
                          idle=IdlePolicy(cpu_threshold=settings.idle_cpu_threshold,
                                          idle_for_seconds=settings.idle_for_seconds,
                                          network_threshold=settings.idle_network_threshold),
                          claim_seconds=handling_seconds(settings))


def remediation_policy(settings: AutopilotSettings) -> RemediationPolicy:
    return RemediationPolicy(mode=settings.remediation_mode,
                             impaired_for_seconds=settings.remediation_impaired_for_seconds,
                             recover_within_seconds=settings.remediation_recover_within_seconds,
                             period_seconds=settings.remediation_period_seconds)


def prices(settings: AutopilotSettings) -> dict[str, float]:
    """The shipped table, overridden by PRICES_FILE; a bad file fails the start naming PRICES_FILE."""
    if not settings.prices_file:
        return price_table()
    try:
        text = Path(settings.prices_file).read_text()
        doc = json.loads(text) if settings.prices_file.endswith(".json") else yaml.safe_load(text)
        if not isinstance(doc, dict):
            raise ValueError("not a mapping of instance type to price")
        return price_table({str(k): float(v) for k, v in doc.items()})
    except (OSError, ValueError, TypeError, yaml.YAMLError) as exc:
        raise ValueError(f"PRICES_FILE: {exc}") from None


def bootstrap(settings: AutopilotSettings, js: JetStreamContext, store: StateStore, *,
              channel: grpc.aio.Channel | None = None, http: httpx.AsyncClient | None = None,
              registry: RegistryPort | None = None, probe: ControllerProbe | None = None,
              publisher: DecisionPublisher | None = None, aws: ClientSource | None = None) -> SampleConsumer:
    if registry is None:
        assert channel is not None, "a registry channel or a registry port"
        registry = GrpcRegistry(channel, settings.registry_token,
                                settings.registry_timeout_seconds)
    if probe is None:
        assert http is not None, "an http client or a probe"
        probe = HttpCmlProbe(http, Credentials(settings.cml_username, settings.cml_password),
                             timeout=settings.cml_probe_timeout_seconds, concurrency=settings.cml_probe_concurrency)
    publisher = publisher or JetStreamDecisionPublisher(js)
    remediation = Remediation(registry, publisher, remediation_policy(settings))
    pilot = Pilot(registry, probe, store, publisher, policy(settings),
                  prices(settings), settings.offhours_schedule,
                  PrivateIpAddresses(aws) if settings.cml_url_from_private_ip and aws is not None else TagAddresses(),
                  remediation=remediation)
    return SampleConsumer(js, pilot, samples_durable(settings.autopilot_consumer_name, handling_seconds(settings)))
