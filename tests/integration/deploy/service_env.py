"""What each service reads from its environment and which ports it then listens on, derived from its settings
class: the yardstick for the deployment files (Kubernetes manifests, docker-compose.yml)."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

from autopilot.settings import AutopilotSettings
from cmlmon_core.settings import AwsSettings, is_secret
from collector.settings import CollectorSettings
from notifier.settings import NotifierSettings
from registry.settings import RegistrySettings

SETTINGS: dict[str, type[BaseSettings]] = {
    "registry": RegistrySettings, "collector": CollectorSettings, "notifier": NotifierSettings,
    "autopilot": AutopilotSettings}

# Read by libraries rather than by our settings: the interpreter, OpenTelemetry's SDK, and for the services
# that call AWS, botocore's credential chain (keys, profile, IRSA's web identity).
STANDARD = ("PYTHON*", "OTEL_*")
STANDARD_AWS = ("AWS_*",)

PORT_FIELDS = ("grpc_port", "grpc_health_port", "metrics_port", "health_port")


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Every variable name the settings class reads: field names and their aliases, upper-cased."""
    names: set[str] = set()
    for name, field in cls.model_fields.items():
        names.add(name.upper())
        if is_secret(field):  # a secret setting is also read from the file <NAME>_FILE names
            names.add(f"{name.upper()}_FILE")
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str):
                names.add(alias.upper())
            elif isinstance(alias, AliasChoices):
                names.update(a.upper() for a in alias.choices if isinstance(a, str))
            elif isinstance(alias, AliasPath) and isinstance(alias.path[0], str):
                names.add(alias.path[0].upper())
    return names


def reads(service: str, name: str) -> bool:
    cls = SETTINGS[service]
    patterns = STANDARD + (STANDARD_AWS if issubclass(cls, AwsSettings) else ())
    return name.upper() in env_names(cls) or any(fnmatch.fnmatchcase(name.upper(), p) for p in patterns)


def settings_from(service: str, env: Mapping[str, str]) -> BaseSettings:
    """The service's settings as it would load them from env alone (and defaults), not from this test
    process's environment; a bad value raises."""
    base = SETTINGS[service]

    class FromEnvOnly(base):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any,
                                       **others: Any) -> tuple[Any, ...]:
            return (init_settings,)

    known = env_names(base)
    return FromEnvOnly(**{k.lower(): v for k, v in env.items() if k.upper() in known})


def listening_ports(settings: BaseSettings) -> dict[str, int]:
    """grpc_port / grpc_health_port / metrics_port / health_port -> port, for those the service has and that
    are not 0."""
    return {f: int(getattr(settings, f)) for f in PORT_FIELDS if getattr(settings, f, 0)}
