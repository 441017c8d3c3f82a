"""Registry settings: field name == environment variable name."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

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
    worker_store: Literal["kv", "mongodb"] = Field(
        default="kv", description="where workers are kept: NATS KV cml_workers, or a MongoDB collection")
    mongodb_database: str = Field(default="cmlmon", pattern=r"^[A-Za-z0-9_-]{1,63}$",
                                  description="database of the workers collection (WORKER_STORE=mongodb)")
    mongodb_server_selection_seconds: float = Field(
        default=5.0, gt=0, le=120, description="how long a call waits for an unreachable MongoDB before failing")
    # Last: its validator reads worker_store. A secret: it may carry a password, so it is never echoed.
    mongodb_uri: SecretStr = Field(default=SecretStr(""), validate_default=True, json_schema_extra={"secret": True},
                                   description="mongodb:// or mongodb+srv:// URI (WORKER_STORE=mongodb); or "
                                               "MONGODB_URI_FILE")

    @field_validator("mongodb_uri")
    @classmethod
    def _mongodb_uri(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        uri = value.get_secret_value()
        if info.data.get("worker_store") == "mongodb" and not uri:
            raise ValueError("required when WORKER_STORE=mongodb")
        if uri and not uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("must start with mongodb:// or mongodb+srv://")
        return value

    # CML controllers (tag cml:url), to release a worker's licence before TerminateWorker.
    cml_username: str = "admin"
    cml_password: SecretStr = Field(default=SecretStr(""), json_schema_extra={"secret": True},
                                    description="empty: licences cannot be released; or CML_PASSWORD_FILE")
    cml_tls_verify: bool = True
    cml_ca_bundle: str = Field(default="", description="PEM file of the CA(s) that signed controller certificates")
    cml_timeout_seconds: float = Field(default=20.0, gt=0, description="time bound of a licence release")

    @field_validator("cml_ca_bundle")
    @classmethod
    def _ca_bundle(cls, value: str) -> str:
        if value and not Path(value).is_file():
            raise ValueError("not a file")
        return value
