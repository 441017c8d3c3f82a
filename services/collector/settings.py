"""Collector settings, read once from the environment (field name == environment variable name)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from cmlmon_core.settings import AwsSettings, CommonSettings, RegistryClientSettings

MEMORY_DIMENSION_NAMES = ("InstanceId", "ImageId", "InstanceType")


class CollectorSettings(CommonSettings, AwsSettings, RegistryClientSettings):
    """How the collector schedules, batches and asks AWS. Defaults suit real AWS; `make run` shortens them."""

    metrics_port: int = Field(default=9102, ge=0, le=65535, description="Prometheus /metrics port; 0 disables")
    health_port: int = Field(
        default=0, ge=0, le=65535, description="HTTP /healthz and /readyz on METRICS_HOST; 0 disables")

    # CloudWatch
    cloudwatch_delay_seconds: int = Field(
        default=60, ge=0, le=3600, description="the query window ends this long before now (data lands late)")
    cloudwatch_lookback_periods: int = Field(
        default=3, ge=1, le=60, description="the query window spans this many metric periods")
    cwagent_namespace: str = Field(default="CWAgent", min_length=1)
    cwagent_memory_dimensions: str = Field(
        default="InstanceId",
        description="dimension names the CloudWatch agent writes mem_used_percent with, comma-separated "
                    "(InstanceId, ImageId, InstanceType)")

    # Ticks
    tick_fetch_batch: int = Field(default=1000, ge=1, le=10_000, description="ticks fetched per pull")
    tick_gather_seconds: float = Field(
        default=1.0, ge=0, le=30, description="after the first tick, keep gathering ticks this long into a batch")
    tick_ack_wait_seconds: float = Field(
        default=60.0, ge=5, le=3600, description="an unacknowledged tick is redelivered to a replica after this")
    tick_max_in_flight: int = Field(default=5000, ge=1, le=100_000, description="ticks being polled at once")
    tick_nak_delay_seconds: float = Field(
        default=5.0, ge=0, le=600, description="a tick whose poll failed is redelivered after this")
    tick_region_lease_seconds: float | None = Field(
        default=None, ge=1, le=600,
        description="a region's lease lapses this long after its holder last renewed it (less than the AckWait); "
                    "unset: 15 s, or a third of the AckWait when that is shorter")

    # AWS calls
    aws_region_concurrency: int = Field(default=4, ge=1, le=64, description="AWS calls in flight per region")
    aws_retry_base_seconds: float = Field(default=0.2, gt=0, le=10)
    aws_retry_cap_seconds: float = Field(default=5.0, gt=0, le=60)

    # Registry reconciliation
    reconcile_interval_seconds: float = Field(
        default=300.0, ge=0, description="how often schedules are reconciled against the registry; 0 disables")

    @model_validator(mode="after")
    def _lease_within_ack_wait(self) -> CollectorSettings:
        if self.region_lease_seconds >= self.tick_ack_wait_seconds:
            raise ValueError("TICK_REGION_LEASE_SECONDS must be less than TICK_ACK_WAIT_SECONDS: a dead replica's "
                             "regions must be taken over before its unacked ticks come back")
        return self

    @field_validator("cwagent_memory_dimensions")
    @classmethod
    def _known_dimensions(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in MEMORY_DIMENSION_NAMES]
        if not names or unknown:
            raise ValueError(f"expected a comma-separated subset of {', '.join(MEMORY_DIMENSION_NAMES)}")
        return ",".join(names)

    @property
    def region_lease_seconds(self) -> float:
        if self.tick_region_lease_seconds is not None:
            return self.tick_region_lease_seconds
        return min(15.0, max(1.0, self.tick_ack_wait_seconds / 3))

    @property
    def memory_dimensions(self) -> tuple[str, ...]:
        return tuple(self.cwagent_memory_dimensions.split(","))
