"""Autopilot settings: field name == environment variable name (case-insensitive). Secrets (REGISTRY_TOKEN,
CML_PASSWORD) can also be read from a file (<NAME>_FILE, cmlmon_core.settings); neither is ever echoed."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from autopilot.domain.offhours import parse as parse_schedule
from cmlmon_core.settings import AwsSettings, CommonSettings, RegistryClientSettings, secret


class AutopilotSettings(CommonSettings, AwsSettings, RegistryClientSettings):
    """Everything the autopilot reads from the environment, loaded once at start-up."""

    metrics_port: int = Field(default=9104, ge=0, le=65535, description="Prometheus /metrics port; 0 disables")
    health_port: int = Field(
        default=0, ge=0, le=65535, description="HTTP /healthz and /readyz on METRICS_HOST; 0 disables")

    # The registry (REGISTRY_ADDRESS, REGISTRY_TOKEN, REGISTRY_TLS*), called under the autopilot's own identity.
    registry_timeout_seconds: float = Field(default=30.0, gt=0)

    # Auto-stop.
    autostop_mode: Literal["off", "dry-run", "enforce"] = "off"
    autostop_grace_seconds: float = Field(default=900.0, ge=0, description="warning to stop; activity cancels")
    idle_cpu_threshold: float = Field(default=5.0, gt=0, le=100, description="percent; idle is strictly below")
    idle_for_seconds: float = Field(default=7200.0, gt=0, description="quiet this long to count as idle")
    idle_network_threshold: float = Field(default=50_000.0, gt=0, description="bytes per second, in + out; "
                                          "idle is strictly below")
    prices_file: str = Field(default="", description="YAML/JSON mapping instance type -> USD per hour")

    offhours_schedule: str = Field(default="", description="e.g. 'Mon-Fri 08:00-19:00 Europe/Berlin'; tag "
                                   "cmlmon:offhours overrides it per worker ('off' opts out)")

    # Remediation of impaired EC2 status checks (domain.remediation).
    remediation_mode: Literal["off", "dry-run", "enforce"] = "off"
    remediation_impaired_for_seconds: float = Field(default=600.0, gt=0,
                                                    description="a status check impaired this long is remediated")
    remediation_recover_within_seconds: float = Field(
        default=1800.0, gt=0, description="not healthy this long after the action: escalated and left alone")
    remediation_period_seconds: float = Field(default=86400.0, gt=0,
                                              description="at most one remediation per worker per period")

    # CML controllers: the address is the worker's `cml:url` tag.
    cml_url_from_private_ip: bool = Field(default=False, description="without a cml:url tag, probe "
                                          "https://<the instance's private IP> (needs ec2:DescribeInstances)")
    cml_username: str = "admin"
    cml_password: str = secret(description="the CML user's password (or CML_PASSWORD_FILE)")
    cml_tls_verify: bool = Field(default=True, description="verify the controller's certificate")
    cml_ca_bundle: str = Field(default="", description="PEM file of the CA(s) that signed controller certificates")
    cml_probe_timeout_seconds: float = Field(default=20.0, gt=0, description="time bound per controller")
    cml_probe_concurrency: int = Field(default=8, ge=1, le=256)

    autopilot_consumer_name: str = Field(default="autopilot", pattern=r"^[A-Za-z0-9_-]+$")

    @field_validator("offhours_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if value:
            parse_schedule(value)  # raises ValueError naming the bad part
        return value

    @model_validator(mode="after")
    def _ca_bundle(self) -> AutopilotSettings:
        if self.cml_ca_bundle and not Path(self.cml_ca_bundle).is_file():
            raise ValueError("CML_CA_BUNDLE is not a file")
        return self

    def cml_verify(self) -> ssl.SSLContext | bool:
        """httpx's verify: a context trusting the CA bundle when given, else on or off."""
        if self.cml_ca_bundle:
            return ssl.create_default_context(cafile=self.cml_ca_bundle)
        return self.cml_tls_verify
