"""The one place that wires the notifier: real adapters by default, fakes when a test passes them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
from nats.js import JetStreamContext

from notifier.adapters.last_sample import LastSampleSource, StreamLastSample
from notifier.adapters.publisher import AlertPublisher, JetStreamAlertPublisher
from notifier.adapters.sinks import build_sink
from notifier.adapters.state_kv import AlertStore
from notifier.domain.model import FiringPolicy
from notifier.domain.retry import RetryPolicy
from notifier.domain.rules import parse_severities
from notifier.entrypoints.consumers import DirectoryFeed, SampleConsumer, SinkConsumer, WorkerEventConsumer
from notifier.entrypoints.grpc_api import AlertServicer
from notifier.service.delivery import Deliverer
from notifier.service.evaluator import Directory, Evaluator, Thresholds
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


def firing_policy(settings: NotifierSettings) -> FiringPolicy:
    return FiringPolicy(for_seconds=settings.alert_for_seconds, min_samples=settings.alert_min_samples,
                        window_samples=max(settings.alert_window_samples, settings.alert_min_samples),
                        hysteresis=settings.alert_hysteresis)


def bootstrap(settings: NotifierSettings, js: JetStreamContext, store: AlertStore, http: httpx.AsyncClient, *,
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
    sinks = {
        spec.name: SinkConsumer(Deliverer(build_sink(spec, http), retry), publisher, settings.delivery_concurrency)
        for spec in sink_specs(settings)
    }
    sweeper = Sweeper(evaluator, last_samples or StreamLastSample(js),
                      default_interval=settings.worker_metrics_poll_interval,
                      silent_intervals=settings.alert_silent_intervals, period=settings.alert_sweep_seconds,
                      wake=wake)
    return Notifier(directory=DirectoryFeed(evaluator.directory),
                    samples=SampleConsumer(evaluator), worker_events=WorkerEventConsumer(evaluator), sinks=sinks,
                    sweeper=sweeper, servicer=AlertServicer(store, wake))
