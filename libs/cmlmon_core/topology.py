"""The streams and key-value buckets of the contract, created idempotently by whichever service starts first.

Creating against an existing stream with the same configuration is a no-op on the server; an existing stream
whose configuration differs (an operator tuned it, or an older version created it) is left as it is and
logged, so that a service never fails to start because its peer got there first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from cmlmon_core import subjects

log = logging.getLogger(__name__)

WORKERS_STREAM = "CML_WORKERS"
POLLS_STREAM = "CML_POLLS"
METRICS_STREAM = "CML_METRICS"
ALERTS_STREAM = "CML_ALERTS"
DEADLETTER_STREAM = "CML_DEADLETTER"
AUTOPILOT_STREAM = "CML_AUTOPILOT"
WORKERS_BUCKET = "cml_workers"
ALERTS_BUCKET = "cml_alerts"
AUTOPILOT_BUCKET = "cml_autopilot"

_STREAM_NAME_IN_USE = 10058


@dataclass(frozen=True, slots=True)
class TopologyOptions:
    """Tunables of the topology; defaults suit a single-node development server."""

    metrics_max_age_seconds: float = 86_400.0
    alerts_max_age_seconds: float = 30 * 86_400.0
    duplicate_window_seconds: float = 120.0
    replicas: int = 1


def stream_configs(opts: TopologyOptions) -> list[StreamConfig]:
    common = {"storage": StorageType.FILE, "num_replicas": opts.replicas, "retention": RetentionPolicy.LIMITS}
    return [
        StreamConfig(
            name=WORKERS_STREAM,
            description="worker lifecycle events",
            subjects=[subjects.WORKERS_ALL],
            duplicate_window=opts.duplicate_window_seconds,
            **common,  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=POLLS_STREAM,
            description="poll schedules and the ticks they produce; one message per subject",
            subjects=[subjects.POLLS_ALL],
            max_msgs_per_subject=1,
            allow_msg_schedules=True,
            allow_rollup_hdrs=True,
            duplicate_window=opts.duplicate_window_seconds,
            **common,  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=METRICS_STREAM,
            description="metric samples per worker",
            subjects=[subjects.METRICS_ALL],
            max_age=opts.metrics_max_age_seconds,
            duplicate_window=opts.duplicate_window_seconds,
            **common,  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=ALERTS_STREAM,
            description="alert transitions (firing, resolved)",
            subjects=[subjects.ALERTS_ALL],
            max_age=opts.alerts_max_age_seconds,
            duplicate_window=opts.duplicate_window_seconds,
            **common,  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=DEADLETTER_STREAM,
            description="alert deliveries given up on, with the reason",
            subjects=[subjects.DEADLETTER_ALL],
            max_age=opts.alerts_max_age_seconds,
            duplicate_window=opts.duplicate_window_seconds,
            **common,  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=AUTOPILOT_STREAM,
            description="autopilot decisions and actions, dry-run included",
            subjects=[subjects.AUTOPILOT_ALL],
            max_age=opts.alerts_max_age_seconds,
            duplicate_window=opts.duplicate_window_seconds,
            **common,  # type: ignore[arg-type]
        ),
    ]


def bucket_configs(opts: TopologyOptions) -> list[KeyValueConfig]:
    return [
        KeyValueConfig(bucket=WORKERS_BUCKET, description="registry worker state", history=1,
                       storage=StorageType.FILE, replicas=opts.replicas),
        KeyValueConfig(bucket=ALERTS_BUCKET, description="notifier alert state", history=1,
                       storage=StorageType.FILE, replicas=opts.replicas),
        KeyValueConfig(bucket=AUTOPILOT_BUCKET, description="autopilot state per worker", history=1,
                       storage=StorageType.FILE, replicas=opts.replicas),
    ]


async def ensure_topology(js: JetStreamContext, opts: TopologyOptions | None = None) -> None:
    """Create every stream and bucket of the contract that does not exist yet."""
    opts = opts or TopologyOptions()
    for config in stream_configs(opts):
        await _ensure_stream(js, config)
    for kv in bucket_configs(opts):
        try:
            await js.create_key_value(kv)
        except BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
            log.info("bucket exists with another configuration; keeping it", extra={"bucket": kv.bucket})


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != _STREAM_NAME_IN_USE:
            raise
        log.info("stream exists with another configuration; keeping it", extra={"stream": config.name})
