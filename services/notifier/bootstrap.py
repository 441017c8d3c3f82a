"""The one place that wires the notifier: real adapters by default, fakes when a test passes them."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import aiohttp
from nats.js import JetStreamContext

from cmlmon_core.consuming import Hurry
from notifier.adapters.last_sample import LastSampleSource, StreamLastSample
from notifier.adapters.lease import KvLease
from notifier.adapters.publisher import AlertPublisher, JetStreamAlertPublisher
from notifier.adapters.sinks import AlertmanagerResend, build_sink
from notifier.adapters.state_kv import AlertStore
from notifier.domain.model import FiringPolicy
from notifier.domain.retry import RetryPolicy
from notifier.domain.rules import parse_severities
from notifier.domain.transitions import StuckPolicy, parse_overrides
from notifier.entrypoints.consumers import (
    DELIVERY_HURRY_SECONDS,
    DirectoryFeed,
    SampleConsumer,
    SinkConsumer,
    WorkerEventConsumer,
)
from notifier.entrypoints.grpc_api import AlertServicer
from notifier.service.delivery import Deliverer
from notifier.service.evaluator import Directory, Evaluator, Thresholds
from notifier.service.resender import Resender
from notifier.service.sweeper import Sweeper
from notifier.settings import NotifierSettings
from notifier.sink_config import sink_specs


@dataclass
class Notifier:
    directory: DirectoryFeed
    samples: SampleConsumer
    worker_events: WorkerEventConsumer
    sinks: dict[str, SinkConsumer]
    sweeper: Sweeper
    servicer: AlertServicer
    resenders: list[Resender] = field(default_factory=list)


def firing_policy(settings: NotifierSettings) -> FiringPolicy:
    return FiringPolicy(for_seconds=settings.alert_for_seconds, min_samples=settings.alert_min_samples,
                        window_samples=max(settings.alert_window_samples, settings.alert_min_samples),
                        hysteresis=settings.alert_hysteresis)


def bootstrap(settings: NotifierSettings, js: JetStreamContext, store: AlertStore, http: aiohttp.ClientSession, *,
              publisher: AlertPublisher | None = None, last_samples: LastSampleSource | None = None,
              wake: asyncio.Event | None = None) -> Notifier:
    publisher = publisher or JetStreamAlertPublisher(js)
    wake = wake or asyncio.Event()
    evaluator = Evaluator(store, publisher, Directory(), firing_policy(settings),
                          Thresholds(cpu=settings.worker_cpu_threshold, memory=settings.worker_memory_threshold,
                                     severities=parse_severities(settings.alert_severities)))
    retry = RetryPolicy(max_attempts=settings.delivery_max_attempts,
                        initial_seconds=settings.delivery_backoff_initial_seconds,
                        max_seconds=settings.delivery_backoff_max_seconds)
    specs = sink_specs(settings)
    hurry = Hurry(DELIVERY_HURRY_SECONDS)  # deliveries in flight: the sample consumer yields after every sample
    sinks = {
        spec.name: SinkConsumer(Deliverer(build_sink(spec, http), retry), publisher, settings.delivery_concurrency,
                                hurry)
        for spec in specs
    }
    replica = uuid.uuid4().hex
    # The lease outlives one period a little: its holder renews it every period, a successor waits it out.
    resenders = [Resender(spec.name, store, AlertmanagerResend(spec, http),
                          KvLease(js, f"{settings.notifier_consumer_prefix}-resend-{spec.name}", replica,
                                  ttl=1.5 * spec.resend_seconds),
                          spec.resend_seconds)
                 for spec in specs if spec.kind == "alertmanager"]
    sweeper = Sweeper(evaluator, last_samples or StreamLastSample(js),
                      default_interval=settings.worker_metrics_poll_interval,
                      silent_intervals=settings.alert_silent_intervals, period=settings.alert_sweep_seconds,
                      wake=wake, stuck=StuckPolicy(settings.stuck_transition_seconds,
                                                   parse_overrides(settings.stuck_transition_overrides)))
    return Notifier(directory=DirectoryFeed(evaluator.directory),
                    samples=SampleConsumer(evaluator, hurry), worker_events=WorkerEventConsumer(evaluator), sinks=sinks,
                    sweeper=sweeper, servicer=AlertServicer(store, wake), resenders=resenders)
