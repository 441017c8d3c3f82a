"""Real things the notifier's integration tests talk to: an HTTP receiver that records (and can verify
Standard Webhooks signatures, fail on purpose, ...), the notifier itself in-process, and publishers of the
messages the registry and collector would send."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from cml.monitor.v1 import events_pb2, worker_pb2
from cmlmon_core import subjects
from cmlmon_core.messages import encode
from cmlmon_dev.servers import free_port
from notifier.entrypoints.main import serve
from notifier.settings import NotifierSettings
from tests.support import eventually as eventually  # re-exported: the notifier tests import it from here


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An aiohttp server recording every POST. `responses` scripts the status codes of the first calls
    (then 200); `secret` makes it verify Standard Webhooks signatures and answer 401 when one is wrong."""

    port: int = 0
    responses: list[int | tuple[int, dict[str, str]]] = field(default_factory=list)
    secret: str = ""
    received: list[Received] = field(default_factory=list)
    rejected: list[Received] = field(default_factory=list)
    calls: int = 0
    gate: asyncio.Event | None = None  # when set up, every request waits for it: a receiver that hangs
    waiting: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/secret-token"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        got = Received(request.path, dict(request.headers), await request.read())
        self.calls += 1
        if self.gate is not None:
            self.waiting += 1
            await self.gate.wait()
            self.waiting -= 1
        if self.responses:
            scripted = self.responses.pop(0)
            status, headers = scripted if isinstance(scripted, tuple) else (scripted, {})
            self.rejected.append(got)
            return web.Response(status=status, headers=headers)
        if self.secret and not verify_signature(self.secret, got.headers, got.body):
            self.rejected.append(got)
            return web.Response(status=401)
        self.received.append(got)
        return web.Response(status=200)

    def for_worker(self, worker_id: str) -> list[Received]:
        return [r for r in self.received if worker_id in r.body.decode(errors="replace")]


def verify_signature(secret: str, headers: dict[str, str], body: bytes, tolerance: float = 300) -> bool:
    """Standard Webhooks verification, written from the spec independently of the notifier's code."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = lower.get("webhook-id"), lower.get("webhook-timestamp"), lower.get("webhook-signature")
    if not (msg_id and ts and sigs) or abs(time.time() - int(ts)) > tolerance:
        return False
    key = base64.b64decode(secret[len("whsec_"):])
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    return any(part.split(",", 1)[-1] == expected for part in sigs.split(" ") if part.startswith("v1,"))


@asynccontextmanager
async def receiving(receiver: Receiver | None = None) -> AsyncIterator[Receiver]:
    receiver = receiver or Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    receiver.port = receiver.port or free_port()
    site = web.TCPSite(runner, "127.0.0.1", receiver.port)
    await site.start()
    try:
        yield receiver
    finally:
        await runner.cleanup()


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
                status: int = worker_pb2.WORKER_STATUS_RUNNING, poll_interval: int = 10) -> worker_pb2.Worker:
    return worker_pb2.Worker(id=worker_id, name=name or f"cml-{worker_id}", region=region,
                             instance_id="i-0" + hashlib.sha1(worker_id.encode()).hexdigest()[:16],
                             status=status, tags=tags or {}, poll_interval_seconds=poll_interval)


async def publish_event(js: JetStreamContext, worker: worker_pb2.Worker, event: str,
                        event_type: int = events_pb2.WORKER_EVENT_TYPE_IMPORTED, *, requested: bool = True,
                        previous: int = worker_pb2.WORKER_STATUS_UNSPECIFIED) -> None:
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
        return info.num_pending == 0 and info.num_ack_pending == 0

    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"consumer {stream}/{durable} not drained within {timeout}s")
        await asyncio.sleep(0.05)


def write_sinks_file(path: Any, sinks: list[dict[str, Any]]) -> str:
    path.write_text(json.dumps({"sinks": sinks}))  # JSON is YAML
    return str(path)
