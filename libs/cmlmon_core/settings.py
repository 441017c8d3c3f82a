"""Typed settings, read once from the environment (pydantic-settings).

Field names are the environment variable names (case-insensitive). The old single-process design's names
(`WORKER_MONITORING_ENABLED`, `WORKER_METRICS_POLL_INTERVAL`, `WORKER_NOTIFICATION_WEBHOOKS`,
`WORKER_CPU_THRESHOLD`, `WORKER_MEMORY_THRESHOLD`) keep working.
"""

from __future__ import annotations

import sys
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Settings every service reads."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

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

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def nats_servers(self) -> list[str]:
        return [s.strip() for s in self.nats_url.split(",") if s.strip()]


class AwsSettings(BaseSettings):
    """Where AWS is. Credentials come from the standard chain (environment, profile, instance role)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    aws_region: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    aws_endpoint_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:4566 for moto")
    aws_max_attempts: int = Field(default=5, ge=1, le=20)
    aws_connect_timeout: float = Field(default=5.0, gt=0)
    aws_read_timeout: float = Field(default=20.0, gt=0)

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
    except ValidationError as exc:
        lines = [f"invalid configuration for {cls.__name__}:"]
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "(settings)"
            # The value itself is not echoed: it may be a secret (a webhook URL with a token, a routing key).
            lines.append(f"  {name}: {err['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
