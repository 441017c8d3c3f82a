"""Typed settings, read once from the environment (pydantic-settings).

Field names are the environment variable names (case-insensitive). The old single-process design's names
(`WORKER_MONITORING_ENABLED`, `WORKER_METRICS_POLL_INTERVAL`, `WORKER_NOTIFICATION_WEBHOOKS`,
`WORKER_CPU_THRESHOLD`, `WORKER_MEMORY_THRESHOLD`) keep working.

Every secret setting (declared with `secret()`) can also be given as a file: `<NAME>_FILE=/path` reads the
value from that file (Kubernetes and compose mount secrets as files). Setting both is an error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

_SECRET: dict[str, Any] = {"secret": True}


def secret(default: str = "", description: str = "") -> Any:
    """A secret setting: never echoed, and also read from the file named by `<NAME>_FILE`."""
    return Field(default=default, description=description, json_schema_extra=_SECRET, repr=False)


def is_secret(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("secret") is True


class SettingsFileError(Exception):
    """A `<NAME>_FILE` setting that cannot be used; the message names the variable, never a secret."""


class SecretFilesSource(PydanticBaseSettingsSource):
    """`<NAME>_FILE` for every secret field: the value is the file's content without its final newline."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ does the work

    def __call__(self) -> dict[str, Any]:
        env = {k.upper(): v for k, v in os.environ.items()}
        found: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            var = name.upper()
            path = env.get(f"{var}_FILE", "")
            if not is_secret(field) or not path:
                continue
            if env.get(var):
                raise SettingsFileError(f"{var} and {var}_FILE are both set; set one of them")
            try:
                found[name] = Path(path).read_text().removesuffix("\n").removesuffix("\r")
            except OSError as exc:
                raise SettingsFileError(f"{var}_FILE: cannot read {path}: {exc.strerror}") from None
        return found


class ServiceSettings(BaseSettings):
    """Base of every settings class: case-insensitive environment variables, frozen, secrets from files."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, SecretFilesSource(settings_cls), env_settings, dotenv_settings, file_secret_settings


class CommonSettings(ServiceSettings):
    """Settings every service reads."""

    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus /metrics port; 0 disables")
    metrics_host: str = "0.0.0.0"
    service_instance_id: str = Field(default="", description="identity of this replica; host:pid when empty")
    worker_monitoring_enabled: bool = True
    worker_metrics_poll_interval: int = Field(default=300, ge=1, le=86_400, description="seconds between polls")
    metrics_stream_max_age_seconds: int = Field(default=86_400, ge=60, description="history kept in CML_METRICS")
    nats_stream_replicas: int = Field(
        default=1, ge=1, le=5, description="replicas of every stream and bucket (3 on a 3-node cluster)")
    shutdown_grace_seconds: float = Field(default=5.0, ge=0)

    # NATS security, all through nats-py's own connect options (see cmlmon_core.nats_conn).
    nats_user: str = Field(default="", description="NATS user (with NATS_PASSWORD)")
    nats_password: str = secret(description="NATS password (or NATS_PASSWORD_FILE)")
    nats_token: str = secret(description="NATS authentication token (or NATS_TOKEN_FILE)")
    nats_creds_file: str = Field(default="", description="NATS .creds file (user JWT and NKey seed)")
    nats_nkey_seed_file: str = Field(default="", description="file holding the NKey seed of this user")
    nats_tls_ca_file: str = Field(default="", description="CA of the NATS servers' certificates; implies TLS")
    nats_tls_cert_file: str = Field(default="", description="client certificate, when NATS verifies clients")
    nats_tls_key_file: str = Field(default="", description="client certificate's private key")
    nats_inbox_prefix: str = Field(default="_INBOX", pattern=r"^[A-Za-z0-9_.-]+$",
                                   description="reply subjects start with this; one per service lets NATS "
                                               "permissions keep the services' replies apart")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def nats_servers(self) -> list[str]:
        return [s.strip() for s in self.nats_url.split(",") if s.strip()]


class GrpcServerSettings(ServiceSettings):
    """Who may call a service's gRPC API and over what: see cmlmon_core.auth and cmlmon_core.grpc_server."""

    grpc_auth: Literal["required", "none"] = Field(
        default="required", description="'none' serves without authentication (logged as a warning at start)")
    grpc_auth_file: str = Field(default="", description="YAML: hashed bearer tokens and certificate subjects")
    grpc_tls_cert_file: str = Field(default="", description="server certificate (PEM); empty: plaintext")
    grpc_tls_key_file: str = Field(default="", description="server private key (PEM)")
    grpc_tls_client_ca_file: str = Field(default="", description="set: require client certificates from this CA")
    grpc_health_port: int = Field(
        default=0, ge=0, le=65535, description="also serve grpc.health.v1 alone, plaintext, on this port, for "
                                                "probes that cannot speak TLS (Kubernetes grpc probes); 0: no")

    @field_validator("grpc_auth", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class RegistryClientSettings(ServiceSettings):
    """How a client reaches the registry's gRPC API (the collector, `make run`)."""

    registry_address: str = Field(default="127.0.0.1:50051", description="registry gRPC host:port")
    registry_token: str = secret(description="bearer token sent to the registry (or REGISTRY_TOKEN_FILE)")
    registry_tls: bool = Field(default=False, description="TLS with the system CAs; implied by the files below")
    registry_tls_ca_file: str = Field(default="", description="CA that signed the registry's certificate")
    registry_tls_cert_file: str = Field(default="", description="client certificate, when the registry needs mTLS")
    registry_tls_key_file: str = Field(default="", description="client certificate's private key")


class AwsSettings(ServiceSettings):
    """Where AWS is. Credentials come from the standard chain (environment, profile, instance role), or from
    AWS_ACCESS_KEY_ID_FILE / AWS_SECRET_ACCESS_KEY_FILE / AWS_SESSION_TOKEN_FILE."""

    aws_region: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    aws_endpoint_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:4566 for moto")
    aws_max_attempts: int = Field(default=5, ge=1, le=20)
    aws_connect_timeout: float = Field(default=5.0, gt=0)
    aws_read_timeout: float = Field(default=20.0, gt=0)
    # Read here only so that the _FILE variants work; empty means "the standard chain decides".
    aws_access_key_id: str = secret(description="AWS access key id (or AWS_ACCESS_KEY_ID_FILE)")
    aws_secret_access_key: str = secret(description="AWS secret access key (or AWS_SECRET_ACCESS_KEY_FILE)")
    aws_session_token: str = secret(description="AWS session token (or AWS_SESSION_TOKEN_FILE)")

    def aws_credentials(self) -> dict[str, str]:
        """Explicit credentials for a client, or none (the standard chain)."""
        if not (self.aws_access_key_id and self.aws_secret_access_key):
            return {}
        found = {"aws_access_key_id": self.aws_access_key_id, "aws_secret_access_key": self.aws_secret_access_key}
        if self.aws_session_token:
            found["aws_session_token"] = self.aws_session_token
        return found

    @field_validator("aws_endpoint_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # `AWS_ENDPOINT_URL: ${AWS_ENDPOINT_URL:-}` (compose) sets it empty: that means real AWS, not "".
        return None if isinstance(value, str) and not value.strip() else value


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """Load settings once at start-up; a bad variable ends the process with a message naming it."""
    try:
        return cls()
    except SettingsFileError as exc:
        print(f"invalid configuration for {cls.__name__}:\n  {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValidationError as exc:
        lines = [f"invalid configuration for {cls.__name__}:"]
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "(settings)"
            # The value itself is not echoed: it may be a secret (a webhook URL with a token, a routing key).
            lines.append(f"  {name}: {err['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
