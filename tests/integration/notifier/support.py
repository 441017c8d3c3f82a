"""Real things the notifier's integration tests talk to: the project's webhook receiver (cmlmon_dev.receiver),
the notifier itself in-process, and publishers of the messages the registry and collector would send."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from cml.monitor.v1 import events_pb2, worker_pb2
from cmlmon_core import subjects
from cmlmon_core.messages import encode
from cmlmon_dev.receiver import Received, WebhookReceiver
from notifier.entrypoints.main import serve
from notifier.settings import NotifierSettings
from tests.support import eventually as eventually  # re-exported: the notifier tests import it from here

# Real webhook URLs carry a token in their path; the tests' do too, so that a leak of it into a log shows.
HOOK_PATH = "/hook/secret-token"


@asynccontextmanager
async def receiving(receiver: WebhookReceiver | None = None) -> AsyncIterator[WebhookReceiver]:
    """A started receiver (cmlmon_dev's, the one `make run` uses) with a hook URL, stopped afterwards."""
    receiver = receiver or WebhookReceiver()
    receiver.path = receiver.path or HOOK_PATH
    async with receiver:
        yield receiver


def about(requests: list[Received], worker_id: str) -> list[Received]:
    """The requests about one worker, by body or by path (an Opsgenie close names the alert only in its path).
    A test's notifier also hears of earlier tests' workers: their lifecycle events stay in CML_WORKERS."""
    return [r for r in requests if worker_id in r.path or worker_id in r.body.decode(errors="replace")]


def notifier_settings(nats_url: str, uid: str, **overrides: Any) -> NotifierSettings:
    values: dict[str, Any] = {
        "nats_url": nats_url, "metrics_port": 0, "grpc_port": 0, "grpc_host": "127.0.0.1",
        "notifier_consumer_prefix": f"notifier-{uid}", "alert_for_seconds": 0, "log_format": "text",
        "alert_min_samples": 1, "alert_window_samples": 1,
        "delivery_backoff_initial_seconds": 0.05, "delivery_backoff_max_seconds": 0.5, "alert_sweep_seconds": 0.5,
        "shutdown_grace_seconds": 1.0,
        # A test's notifier has durables of its own (prefix above): were they to replay the last minutes of the
        # session's streams, every test would evaluate and deliver the alerts of all tests before it.
        "notifier_replay_seconds": 0,
    }
    values.update(overrides)
    return NotifierSettings(**values)


@asynccontextmanager
async def running_notifier(settings: NotifierSettings) -> AsyncIterator[asyncio.Task[None]]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiter], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # raises the start-up error
    assert ready.is_set(), "notifier did not become ready"
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def now_ts(offset: float = 0.0) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int((time.time() + offset) * 1e9))
    return ts


def make_worker(worker_id: str, *, region: str = "us-east-1", name: str = "", tags: dict[str, str] | None = None,
                status: worker_pb2.WorkerStatus = worker_pb2.WORKER_STATUS_RUNNING, poll_interval: int = 10
                ) -> worker_pb2.Worker:
    return worker_pb2.Worker(id=worker_id, name=name or f"cml-{worker_id}", region=region,
                             instance_id="i-0" + hashlib.sha1(worker_id.encode()).hexdigest()[:16],
                             status=status, tags=tags or {}, poll_interval_seconds=poll_interval)


async def publish_event(js: JetStreamContext, worker: worker_pb2.Worker, event: str,
                        event_type: events_pb2.WorkerEventType = events_pb2.WORKER_EVENT_TYPE_IMPORTED, *,
                        requested: bool = True,
                        previous: worker_pb2.WorkerStatus = worker_pb2.WORKER_STATUS_UNSPECIFIED) -> None:
    msg = events_pb2.WorkerEvent(event_id=uuid.uuid4().hex, type=event_type, worker=worker, previous_status=previous,
                                 requested=requested, occur_time=now_ts())
    data, headers = encode(msg, msg_id=msg.event_id)
    await js.publish(subjects.worker_event(worker.id, event), data, headers=headers)


async def publish_sample(js: JetStreamContext, worker: worker_pb2.Worker, *, cpu: float | None = None,
                         memory: float | None = None, offset: float = 0.0, **fields: Any) -> None:
    sample = events_pb2.MetricSample(
        worker_id=worker.id, region=worker.region, instance_id=worker.instance_id, observe_time=now_ts(offset),
        status=fields.pop("status", worker_pb2.WORKER_STATUS_RUNNING), ec2_state="running",
        poll_interval_seconds=worker.poll_interval_seconds or 10, **fields,
    )
    if cpu is not None:
        sample.cpu_utilization = cpu
    if memory is not None:
        sample.memory_utilization = memory
    data, headers = encode(sample)
    await js.publish(subjects.metric(worker.region, worker.id), data, headers=headers)


async def drained(js: JetStreamContext, stream: str, durable: str, timeout: float = 20.0) -> None:
    """Wait until a durable consumer has nothing pending and nothing unacknowledged."""

    async def check() -> bool:
        info = await js.consumer_info(stream, durable)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await eventually(check, timeout=timeout)


def write_sinks_file(path: Any, sinks: list[dict[str, Any]]) -> str:
    path.write_text(json.dumps({"sinks": sinks}))  # JSON is YAML
    return str(path)
