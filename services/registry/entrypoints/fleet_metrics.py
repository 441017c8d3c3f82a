"""Fleet gauges for Prometheus, read from the worker view at scrape time (no bookkeeping on the write path).
Terminated workers leave the per-worker series (they would only grow the cardinality) but stay counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cmlmon_core.status import check_label, status_label
from registry.domain import model
from registry.service.view import WorkerView


class FleetCollector(Collector):
    def __init__(self, view: WorkerView) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        labels = ["worker_id", "name", "region"]
        status = GaugeMetricFamily("cmlmon_worker_status", "1 for the worker's current status",
                                   labels=[*labels, "status"])
        cpu = GaugeMetricFamily("cmlmon_worker_cpu_utilization_percent", "last CPU utilisation", labels=labels)
        memory = GaugeMetricFamily("cmlmon_worker_memory_utilization_percent", "last memory utilisation",
                                   labels=labels)
        checks = GaugeMetricFamily("cmlmon_worker_status_check", "1 for the value of each EC2 status check",
                                   labels=[*labels, "check", "value"])
        last_seen = GaugeMetricFamily("cmlmon_worker_last_seen_timestamp_seconds", "when a collector last saw it",
                                      labels=labels)
        totals: Counter[tuple[str, str]] = Counter()
        for stored in self._view.snapshot():
            w = stored.worker
            totals[(w.region, status_label(w.status))] += 1
            if w.status == model.TERMINATED:
                continue
            values = [w.id, w.name, w.region]
            status.add_metric([*values, status_label(w.status)], 1)
            if w.HasField("cpu_utilization"):
                cpu.add_metric(values, w.cpu_utilization)
            if w.HasField("memory_utilization"):
                memory.add_metric(values, w.memory_utilization)
            checks.add_metric([*values, "system", check_label(w.system_status_check)], 1)
            checks.add_metric([*values, "instance", check_label(w.instance_status_check)], 1)
            if w.HasField("last_seen_time"):
                last_seen.add_metric(values, w.last_seen_time.seconds + w.last_seen_time.nanos / 1e9)
        count = GaugeMetricFamily("cmlmon_workers", "workers by region and status", labels=["region", "status"])
        for (region, name), n in sorted(totals.items()):
            count.add_metric([region, name], n)
        watchers = GaugeMetricFamily("registry_watch_streams", "open WatchWorkers streams")
        watchers.add_metric([], self._view.watchers)
        yield from (status, cpu, memory, checks, last_seen, count, watchers)
