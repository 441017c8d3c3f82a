"""Registry settings: field name == environment variable name."""

from __future__ import annotations

from pydantic import Field

from cmlmon_core.settings import AwsSettings, CommonSettings, GrpcServerSettings, secret


class RegistrySettings(CommonSettings, AwsSettings, GrpcServerSettings):
    """Everything the registry reads from the environment, once, at start-up."""

    grpc_host: str = Field(default="0.0.0.0", description="address the gRPC server binds")
    grpc_port: int = Field(default=50051, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(default=9101, ge=0, le=65535, description="Prometheus /metrics port; 0 disables")
    registry_missing_grace_seconds: float = Field(
        default=300.0, ge=0, description="how long EC2 may not know an instance before its worker is terminated"
    )
    registry_page_token_secret: str = secret(
        description="HMAC key for page tokens; empty: a key shared through NATS KV is used")
    registry_outbox_sweep_seconds: float = Field(
        default=30.0, gt=0, description="how often unconfirmed lifecycle events are looked for and re-published"
    )
    registry_metrics_batch: int = Field(default=256, ge=1, le=10_000, description="samples fetched per pull")
