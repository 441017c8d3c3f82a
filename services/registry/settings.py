"""Registry settings: field name == environment variable name."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from cmlmon_core.settings import AwsSettings, CommonSettings


class RegistrySettings(CommonSettings, AwsSettings):
    """Everything the registry reads from the environment, once, at start-up."""

    grpc_host: str = Field(default="0.0.0.0", description="address the gRPC server binds")
    grpc_port: int = Field(default=50051, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(default=9101, ge=0, le=65535, description="Prometheus /metrics port; 0 disables")
    registry_missing_grace_seconds: float = Field(
        default=300.0, ge=0, description="how long EC2 may not know an instance before its worker is terminated"
    )
    registry_page_token_secret: str = Field(
        default="", description="HMAC key for page tokens; empty: a key shared through NATS KV is used"
    )
    registry_outbox_sweep_seconds: float = Field(
        default=30.0, gt=0, description="how often unconfirmed lifecycle events are looked for and re-published"
    )
    registry_metrics_batch: int = Field(default=256, ge=1, le=10_000, description="samples fetched per pull")

    # CML controllers (tag cml:url), to release a worker's licence before TerminateWorker.
    cml_username: str = "admin"
    cml_password: SecretStr = Field(default=SecretStr(""), description="empty: licences cannot be released")
    cml_password_file: str = ""
    cml_tls_verify: bool = True
    cml_ca_bundle: str = Field(default="", description="PEM file of the CA(s) that signed controller certificates")
    cml_timeout_seconds: float = Field(default=20.0, gt=0, description="time bound of a licence release")

    @model_validator(mode="after")
    def _cml_files(self) -> RegistrySettings:
        if self.cml_password_file:
            try:
                value = Path(self.cml_password_file).read_text().strip()
            except OSError as exc:
                raise ValueError(f"CML_PASSWORD_FILE cannot be read: {exc.strerror}") from None
            object.__setattr__(self, "cml_password", SecretStr(value))
        if self.cml_ca_bundle and not Path(self.cml_ca_bundle).is_file():
            raise ValueError("CML_CA_BUNDLE is not a file")
        return self
