"""The collector's Prometheus metrics (default registry, served on METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

AWS_CALLS = Counter("cmlmon_collector_aws_calls_total", "AWS API calls by action, region and outcome",
                    ["action", "region", "outcome"])
AWS_RETRIES = Counter("cmlmon_collector_aws_retries_total", "AWS calls retried after throttling or 5xx",
                      ["action", "region", "code"])
TICKS = Counter("cmlmon_collector_ticks_total", "poll ticks handled by outcome (acked, naked, terminated)",
                ["outcome"])
TICKS_REDELIVERED = Counter("cmlmon_collector_ticks_redelivered_total", "poll ticks delivered more than once")
SAMPLES = Counter("cmlmon_collector_samples_total", "metric samples published", ["region"])
INSTANCES_MISSING = Counter("cmlmon_collector_instances_missing_total", "polled instances EC2 does not know")
BATCH_SECONDS = Histogram("cmlmon_collector_region_batch_seconds", "time to poll one region's share of a batch",
                          ["region"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
POLL_LAG = Histogram("cmlmon_collector_poll_lag_seconds", "from tick stored to sample published",
                     buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300))
POLL_INTERVAL = Gauge("cmlmon_collector_poll_interval_seconds",
                      "WORKER_METRICS_POLL_INTERVAL: poll lag above it means polls fall behind")
IN_FLIGHT = Gauge("cmlmon_collector_ticks_in_flight", "ticks fetched and not yet acked or naked")
SCHEDULE_CHANGES = Counter("cmlmon_collector_schedule_changes_total", "schedules written or removed",
                           ["change", "cause"])
WORKER_EVENTS = Counter("cmlmon_collector_worker_events_total", "worker lifecycle events consumed", ["outcome"])
RECONCILE_RUNS = Counter("cmlmon_collector_reconcile_runs_total", "reconciliations against the registry",
                         ["outcome"])
