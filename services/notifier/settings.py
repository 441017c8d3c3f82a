"""Notifier settings: field name == environment variable name (case-insensitive)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from cmlmon_core.settings import CommonSettings, GrpcServerSettings, secret
from notifier.domain.rules import parse_severities
from notifier.domain.transitions import DEFAULT_OVERRIDES, parse_overrides


class NotifierSettings(CommonSettings, GrpcServerSettings):
    """Everything the notifier reads from the environment, loaded once at start-up."""

    metrics_port: int = Field(default=9103, ge=0, le=65535, description="Prometheus /metrics port; 0 disables")
    grpc_port: int = Field(default=50052, ge=0, le=65535, description="AlertService gRPC port; 0 picks a free one")
    grpc_host: str = "0.0.0.0"

    # Old design's names: comma-separated webhook URLs and the two thresholds (percent).
    worker_notification_webhooks: str = secret(description="comma-separated generic webhook URLs (may carry tokens)")
    worker_cpu_threshold: float = Field(default=90.0, gt=0, le=100)
    worker_memory_threshold: float = Field(default=90.0, gt=0, le=100)

    # When a rule fires and resolves.
    # Default: two consecutive breaching samples, whatever the poll interval (10 s in the demo, 300 s in
    # production); ALERT_FOR_SECONDS adds a minimum duration on top.
    alert_for_seconds: float = Field(default=0.0, ge=0, description="condition must hold this long to fire")
    alert_min_samples: int = Field(default=2, ge=1, description="M: breaching samples needed among the last N")
    alert_window_samples: int = Field(default=2, ge=1, le=100, description="N: samples remembered per rule")
    alert_severities: str = Field(default="", description="overrides, e.g. cpu_high=critical,silent=info")
    alert_hysteresis: float = Field(default=5.0, ge=0, description="resolve only below threshold minus this")
    alert_silent_intervals: float = Field(default=3.0, gt=0, description="poll intervals without a sample")
    alert_sweep_seconds: float = Field(default=5.0, gt=0, description="period of the silence/silent-worker sweep")
    # stuck_transition: a requested start/stop/terminate EC2 has not completed within this time.
    stuck_transition_seconds: float = Field(default=600.0, gt=0, description="time a requested transition may take")
    stuck_transition_overrides: str = Field(default=DEFAULT_OVERRIDES,
                                            description="per instance type, size or family, e.g. metal=1800,p4d=900")

    # Consumers: durable names are "<prefix>", "<prefix>-workers", "<prefix>-sink-<sink>".
    notifier_consumer_prefix: str = Field(default="notifier", pattern=r"^[A-Za-z0-9_-]+$")
    notifier_replay_seconds: float = Field(default=300.0, ge=0, description="history a new consumer starts from")

    # Sinks besides WORKER_NOTIFICATION_WEBHOOKS; a YAML file can list several of each kind.
    webhook_secret: str = secret(description="whsec_ secret signing the generic webhooks")
    slack_webhook_url: str = secret(description="Slack incoming webhook URL (it carries a token)")
    pagerduty_routing_key: str = secret(description="PagerDuty Events v2 routing key")
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"
    opsgenie_api_key: SecretStr = Field(default=SecretStr(""), description="Opsgenie API integration key")
    opsgenie_region: Literal["us", "eu"] = Field(default="us", description="us: api.opsgenie.com, eu: api.eu...")
    opsgenie_url: str = Field(default="", description="base URL overriding OPSGENIE_REGION (a proxy, tests)")
    alertmanager_url: str = Field(default="", description="base URL, e.g. http://127.0.0.1:9093")
    alertmanager_resend_seconds: float = Field(default=60.0, ge=1, le=3600,
                                               description="firing alerts re-sent this often; endsAt 4x ahead")
    notifier_sinks_file: str = Field(default="", description="YAML file listing sinks")

    # Delivery.
    delivery_timeout_seconds: float = Field(default=5.0, gt=0)
    delivery_max_attempts: int = Field(default=6, ge=1, le=50)
    delivery_backoff_initial_seconds: float = Field(default=0.5, gt=0)
    delivery_backoff_max_seconds: float = Field(default=60.0, gt=0)
    delivery_concurrency: int = Field(default=16, ge=1, le=1000, description="deliveries in flight per sink")

    # WEBHOOK_SECRET and the URLs are checked in sink_config, whose errors name the variable but never echo
    # its value (it is a secret, or a URL carrying a token).

    @field_validator("alert_severities")
    @classmethod
    def _severities(cls, value: str) -> str:
        parse_severities(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("stuck_transition_overrides")
    @classmethod
    def _overrides(cls, value: str) -> str:
        parse_overrides(value)  # raises ValueError naming the bad entry
        return value

    @property
    def webhook_urls(self) -> list[str]:
        return [u.strip() for u in self.worker_notification_webhooks.split(",") if u.strip()]
