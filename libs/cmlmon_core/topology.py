"""The streams and key-value buckets of the contract, created idempotently by whichever service starts first.

Creating against an existing stream with the same configuration is a no-op on the server. An existing stream
or bucket with fewer replicas than asked is scaled up in place (JetStream moves a stream from R1 to R3 without
losing its messages), so raising NATS_STREAM_REPLICAS on a running system takes effect at the next start of
any service. Any other difference (an operator tuned it, an older version created it, it has more replicas
than asked) is drift: logged and left as it is, so that a service never fails to start because its peer got
there first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from cmlmon_core import subjects
from cmlmon_core.settings import CommonSettings

log = logging.getLogger(__name__)

WORKERS_STREAM = "CML_WORKERS"
POLLS_STREAM = "CML_POLLS"
METRICS_STREAM = "CML_METRICS"
ALERTS_STREAM = "CML_ALERTS"
DEADLETTER_STREAM = "CML_DEADLETTER"
AUTOPILOT_STREAM = "CML_AUTOPILOT"
WORKERS_BUCKET = "cml_workers"
ALERTS_BUCKET = "cml_alerts"
REGISTRY_BUCKET = "cml_registry"
AUTOPILOT_BUCKET = "cml_autopilot"
HISTORY_BUCKET = "cml_metric_history"

_STREAM_NAME_IN_USE = 10058


@dataclass(frozen=True, slots=True)
class TopologyOptions:
    """Tunables of the topology; defaults suit a single-node development server."""

    metrics_max_age_seconds: float = 86_400.0
    alerts_max_age_seconds: float = 30 * 86_400.0
    duplicate_window_seconds: float = 120.0
    replicas: int = 1

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> TopologyOptions:
        """The options every service derives from the settings they must agree on."""
        return cls(metrics_max_age_seconds=settings.metrics_stream_max_age_seconds,
                   replicas=settings.nats_stream_replicas)


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
        KeyValueConfig(bucket=REGISTRY_BUCKET, description="registry internals: instance ownership, shared keys",
                       history=1, storage=StorageType.FILE, replicas=opts.replicas),
        KeyValueConfig(bucket=AUTOPILOT_BUCKET, description="autopilot state per worker", history=1,
                       storage=StorageType.FILE, replicas=opts.replicas),
        # One key per worker and six hours of samples, rewritten as samples arrive (so kept as long as
        # CML_METRICS keeps them, at most six hours more); read with batched direct gets of the window's keys.
        KeyValueConfig(bucket=HISTORY_BUCKET, description="metric history per worker and 6 hours (registry)",
                       history=1, ttl=opts.metrics_max_age_seconds, storage=StorageType.FILE,
                       replicas=opts.replicas, direct=True),
    ]


async def ensure_topology(js: JetStreamContext, opts: TopologyOptions | None = None) -> None:
    """Create every stream and bucket of the contract that does not exist yet; scale up those with too few
    replicas."""
    opts = opts or TopologyOptions()
    for config in stream_configs(opts):
        await _ensure(js, config.name or "", opts.replicas, partial(js.add_stream, config))
    for kv in bucket_configs(opts):
        # A bucket is the stream KV_<bucket>.
        await _ensure(js, f"KV_{kv.bucket}", opts.replicas, partial(js.create_key_value, kv))
    for stream in [c.name or "" for c in stream_configs(opts)] + [f"KV_{b.bucket}" for b in bucket_configs(opts)]:
        await _wait_for_leader(js, stream)


async def _ensure(js: JetStreamContext, stream: str, replicas: int, create: Callable[[], Awaitable[object]]
                  ) -> None:
    if await _created_or_same(create):
        return
    if await _scale_up(js, stream, replicas) and await _created_or_same(create):
        return
    log.warning("stream drifted from the configuration asked for; keeping it", extra={"stream": stream})


async def _created_or_same(create: Callable[[], Awaitable[object]]) -> bool:
    """Create; False when a stream of that name exists with another configuration."""
    try:
        await create()
    except BadRequestError as exc:
        if exc.err_code != _STREAM_NAME_IN_USE:
            raise
        return False
    return True


async def _scale_up(js: JetStreamContext, stream: str, replicas: int) -> bool:
    """Raise the stream's replicas to `replicas`, changing nothing else; False when it already has as many."""
    config = (await js.stream_info(stream)).config
    have = config.num_replicas or 1
    if have >= replicas:
        return False
    await js.update_stream(dataclasses.replace(config, num_replicas=replicas))
    log.info("stream scaled up", extra={"stream": stream, "replicas_before": have, "replicas": replicas})
    return True


async def _wait_for_leader(js: JetStreamContext, stream: str, timeout: float = 20.0) -> None:
    """On a cluster, creating a stream returns before its replicas have elected a leader, and until then a
    publish finds no responder: a service that wrote right after start-up would fail. Bounded: a stream that
    stays leaderless is logged and left to the callers' own retries."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            cluster = (await js.stream_info(stream)).cluster
            if cluster is None or cluster.leader:
                return
        except (NatsError, TimeoutError):
            pass  # no leader to answer yet
        if loop.time() > deadline:
            log.warning("stream has no leader yet; going on", extra={"stream": stream, "waited": timeout})
            return
        await asyncio.sleep(0.1)
