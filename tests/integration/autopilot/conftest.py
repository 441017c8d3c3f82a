"""The autopilot against real components: nats-server, moto's server, a registry on real gRPC, the CML
controller stand-in over HTTP. The test plays the collector: it publishes the metric samples itself, with
observation times it chooses, so idle periods and grace periods pass without waiting."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aioboto3
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from autopilot.adapters.state_kv import KvStateStore
from autopilot.domain.autostop import PilotState
from autopilot.entrypoints.main import serve
from autopilot.settings import AutopilotSettings
from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_core import messages, subjects
from cmlmon_core.topology import METRICS_STREAM
from cmlmon_dev.aws_proxy import CountingAwsProxy
from cmlmon_dev.cml_sim import CmlController
from tests.integration.registry.conftest import RunningRegistry, registry_settings, running_registry
from tests.support import eventually

REGION = "us-east-1"
AMI = "ami-12c6146b"
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)


@dataclass
class Decisions:
    seen: list[events_pb2.AutopilotDecision] = field(default_factory=list)

    def actions(self, worker_id: str) -> list[str]:
        return [d.action for d in self.seen if d.worker_id == worker_id]


@dataclass
class Fleet:
    js: JetStreamContext
    registry: RunningRegistry
    ec2: Any
    decisions: Decisions
    store: KvStateStore
    aws: CountingAwsProxy  # the registry's way to AWS (the test's own ec2 client goes to moto directly)

    async def worker(self, tags: dict[str, str]) -> worker_pb2.Worker:
        run = await self.ec2.run_instances(ImageId=AMI, InstanceType="c5.metal", MinCount=1, MaxCount=1)
        instance_id = run["Instances"][0]["InstanceId"]
        reply = await self.registry.stub.ImportWorker(rs.ImportWorkerRequest(
            region=REGION, instance_id=instance_id, name=f"cml-{uuid.uuid4().hex[:6]}", tags=tags))
        return reply.worker

    async def sample(self, worker: worker_pb2.Worker, minute: float, cpu: float | None = 1.0,
                     status: int = worker_pb2.WORKER_STATUS_RUNNING, base: datetime = BASE,
                     network: float | None = 2_000.0) -> None:
        """Publish a sample as the collector would; network is bytes per second in + out."""
        when = Timestamp()
        when.FromDatetime(base + timedelta(minutes=minute))
        sample = events_pb2.MetricSample(worker_id=worker.id, region=REGION, instance_id=worker.instance_id,
                                         observe_time=when, status=status)  # type: ignore[arg-type]
        if cpu is not None:
            sample.cpu_utilization = cpu
        if network is not None:
            sample.network_in_bytes_per_second = network * 0.75
            sample.network_out_bytes_per_second = network * 0.25
        data, headers = messages.encode(sample, msg_id=uuid.uuid4().hex)
        await self.js.publish(subjects.metric(REGION, worker.id), data, headers=headers)

    async def handled(self, worker: worker_pb2.Worker, minute: float, base: datetime = BASE) -> PilotState:
        """Wait until the autopilot has judged the worker's sample of `minute` (its state records it; the actions
        of that sample may still be under way)."""
        at = base + timedelta(minutes=minute)

        async def state() -> PilotState | None:
            got, _ = await self.store.get(worker.id)
            return got if got.idle.last_seen == at else None
        found: PilotState = await eventually(state, timeout=60)
        return found

    async def feed(self, workers: list[worker_pb2.Worker], minutes: range, *, copies: int = 1,
                   base: datetime = BASE, until: Callable[[worker_pb2.Worker], bool] | None = None) -> None:
        """Play the collector minute by minute: publish each worker's sample of a minute (`copies` times), then
        wait until the autopilot has judged it before publishing the next minute. A worker for which `until`
        holds gets no more samples; at the end of `minutes`, wait for `until` to hold for every worker. (Samples
        published all at once are fetched by replicas in batches and a worker's minutes judged out of order.)"""
        for minute in minutes:
            if until is not None:
                workers = [w for w in workers if not until(w)]
            for worker in workers:
                for _ in range(copies):
                    await self.sample(worker, minute, base=base)
            for worker in workers:
                await self.handled(worker, minute, base=base)
        if until is not None:
            await eventually(lambda: all(until(w) for w in workers), timeout=60)

    async def ec2_state(self, worker: worker_pb2.Worker) -> str:
        reply = await self.ec2.describe_instances(InstanceIds=[worker.instance_id])
        return str(reply["Reservations"][0]["Instances"][0]["State"]["Name"])


@pytest.fixture
async def cml() -> AsyncIterator[CmlController]:
    async with CmlController() as controller:
        yield controller


@pytest.fixture
async def fleet(nats_url: str, aws_endpoint: str, js: JetStreamContext) -> AsyncIterator[Fleet]:
    decisions = Decisions()

    async def on_msg(msg: Any) -> None:
        decisions.seen.append(messages.decode(events_pb2.AutopilotDecision, msg.data, msg.headers))

    sub = await js.subscribe(subjects.AUTOPILOT_ALL, cb=on_msg, ordered_consumer=True,
                             deliver_policy=DeliverPolicy.NEW)
    async with (CountingAwsProxy(aws_endpoint) as aws,
                running_registry(registry_settings(nats_url, aws.url)) as registry,
                aioboto3.Session().client("ec2", region_name=REGION, endpoint_url=aws_endpoint) as ec2):
        yield Fleet(js, registry, ec2, decisions, await KvStateStore.open(js), aws)
    await sub.unsubscribe()


def autopilot_settings(nats_url: str, registry: RunningRegistry, durable: str, **extra: Any) -> AutopilotSettings:
    values: dict[str, Any] = {
        "nats_url": nats_url, "registry_address": registry.address, "metrics_port": 0, "log_format": "text",
        "autostop_mode": "enforce", "idle_for_seconds": 600, "autostop_grace_seconds": 300,
        "cml_password": "cml-password", "autopilot_consumer_name": durable, **extra}
    return AutopilotSettings(**values)


@contextlib.asynccontextmanager
async def running_autopilots(js: JetStreamContext, *settings: AutopilotSettings) -> AsyncIterator[None]:
    """Autopilot replicas in this loop, ready (bound to their durable) when the body starts."""
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in settings]
    tasks = [asyncio.create_task(serve(s, stop, r)) for s, r in zip(settings, readies, strict=True)]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        for name in {s.autopilot_consumer_name for s in settings}:
            with contextlib.suppress(Exception):
                await js.delete_consumer(METRICS_STREAM, name)
