"""The one place that wires the collector: real adapters by default, fakes when a test passes them."""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.client import Client
from nats.js import JetStreamContext

from cmlmon_core.aws import AwsClients
from cmlmon_core.grpc_client import GrpcTarget
from collector.adapters.aws import (
    CLIENT_CONFIG,
    AwsPoller,
    InstanceStatusPort,
    MetricDataPort,
    RetryPolicy,
    collector_session,
)
from collector.adapters.leases import RegionLeases
from collector.adapters.publisher import JetStreamSamples, SamplePublisher
from collector.adapters.registry import GrpcRegistry, WorkerDirectory
from collector.adapters.schedules import JetStreamSchedules, ScheduleStore
from collector.domain.cloudwatch import MetricOptions
from collector.entrypoints.reconciler import Reconciler
from collector.entrypoints.ticks import TickConsumer, TickOptions
from collector.entrypoints.worker_events import WorkerEventConsumer
from collector.service.poll import RegionPoller
from collector.service.schedules import ScheduleKeeper
from collector.settings import CollectorSettings


@dataclass(frozen=True, slots=True)
class Collector:
    worker_events: WorkerEventConsumer
    ticks: TickConsumer
    reconciler: Reconciler


def retry_policy(settings: CollectorSettings) -> RetryPolicy:
    return RetryPolicy(max_attempts=settings.aws_max_attempts, base_seconds=settings.aws_retry_base_seconds,
                       cap_seconds=settings.aws_retry_cap_seconds)


def aws_clients(settings: CollectorSettings) -> AwsClients:
    """Clients that make one attempt per call (the collector retries itself, with its own backoff), parse
    timestamps fast and skip client-side parameter validation."""
    return AwsClients(settings, session=collector_session(CLIENT_CONFIG), config=CLIENT_CONFIG)


def metric_options(settings: CollectorSettings) -> MetricOptions:
    return MetricOptions(delay_seconds=settings.cloudwatch_delay_seconds,
                         lookback_periods=settings.cloudwatch_lookback_periods,
                         memory_namespace=settings.cwagent_namespace,
                         memory_dimensions=settings.memory_dimensions)


def tick_options(settings: CollectorSettings) -> TickOptions:
    return TickOptions(fetch_batch=settings.tick_fetch_batch, gather_seconds=settings.tick_gather_seconds,
                       ack_wait_seconds=settings.tick_ack_wait_seconds, max_in_flight=settings.tick_max_in_flight,
                       nak_delay_seconds=settings.tick_nak_delay_seconds,
                       shutdown_grace_seconds=settings.shutdown_grace_seconds,
                       lease_seconds=settings.region_lease_seconds,
                       discover_seconds=settings.region_lease_seconds)


def bootstrap(settings: CollectorSettings, *, nc: Client, js: JetStreamContext, collector_id: str,
              clients: AwsClients | None = None, ec2: InstanceStatusPort | None = None,
              metrics: MetricDataPort | None = None, schedules: ScheduleStore | None = None,
              publisher: SamplePublisher | None = None, directory: WorkerDirectory | None = None) -> Collector:
    if ec2 is None or metrics is None:
        if clients is None:
            raise ValueError("pass AWS clients, or both an ec2 and a metrics port")
        aws = AwsPoller(clients, retry_policy(settings), settings.aws_region_concurrency)
        ec2 = ec2 or aws
        metrics = metrics or aws
    keeper = ScheduleKeeper(schedules or JetStreamSchedules(nc, js), settings.worker_metrics_poll_interval)
    poller = RegionPoller(ec2, metrics, metric_options(settings))
    return Collector(
        worker_events=WorkerEventConsumer(js, keeper),
        ticks=TickConsumer(js, poller, publisher or JetStreamSamples(js),
                           RegionLeases(nc, js, collector_id, settings.region_lease_seconds,
                                        replicas=settings.nats_stream_replicas),
                           collector_id, tick_options(settings)),
        reconciler=Reconciler(directory or GrpcRegistry(GrpcTarget.registry(settings)), keeper,
                              settings.reconcile_interval_seconds),
    )
