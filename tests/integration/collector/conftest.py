"""A collector running in the test's event loop against the session's nats-server and moto server, plus
helpers to make moto instances, CloudWatch datapoints and worker events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from cml.monitor.v1 import events_pb2, worker_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.aws import AwsClients
from collector.bootstrap import Collector, aws_clients, bootstrap
from collector.settings import CollectorSettings
from tests.support import eventually

INTERVAL = 2


def collector_settings(nats_url: str, aws_endpoint: str, **overrides: Any) -> CollectorSettings:
    values: dict[str, Any] = {
        "nats_url": nats_url, "aws_endpoint_url": aws_endpoint, "metrics_port": 0,
        "worker_metrics_poll_interval": INTERVAL, "cloudwatch_delay_seconds": 0,
        "reconcile_interval_seconds": 0, "tick_gather_seconds": 0.2, "tick_nak_delay_seconds": 1,
        "tick_region_lease_seconds": 1.5,
        "aws_retry_base_seconds": 0.05, "aws_retry_cap_seconds": 0.2, "service_instance_id": "test-collector",
    }
    values.update(overrides)
    return CollectorSettings(**values)


@dataclass
class RunningCollector:
    app: Collector
    settings: CollectorSettings
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]]


@pytest.fixture
async def collector(nc: Client, js: JetStreamContext, nats_url: str, aws_endpoint: str
                    ) -> AsyncIterator[RunningCollector]:
    settings = collector_settings(nats_url, aws_endpoint)
    async with aws_clients(settings) as clients:
        running = start_collector(settings, nc, js, clients)
        try:
            yield running
        finally:
            running.stop.set()
            await asyncio.wait_for(asyncio.gather(*running.tasks), 30)


def start_collector(settings: CollectorSettings, nc: Client, js: JetStreamContext, clients: AwsClients,
                    **fakes: Any) -> RunningCollector:
    app = bootstrap(settings, nc=nc, js=js, collector_id=settings.service_instance_id, clients=clients, **fakes)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(app.worker_events.run(stop)), asyncio.create_task(app.ticks.run(stop))]
    return RunningCollector(app=app, settings=settings, stop=stop, tasks=tasks)


def ec2_client(endpoint: str, region: str) -> Any:
    return boto3.client("ec2", region_name=region, endpoint_url=endpoint)


def cloudwatch_client(endpoint: str, region: str) -> Any:
    return boto3.client("cloudwatch", region_name=region, endpoint_url=endpoint)


def launch(endpoint: str, region: str, count: int = 1) -> list[str]:
    ec2 = ec2_client(endpoint, region)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    reply = ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=count, MaxCount=count)
    return [i["InstanceId"] for i in reply["Instances"]]


def put_metrics(endpoint: str, region: str, instance_id: str, cpu: float | None, memory: float | None,
                at: datetime | None = None, network_bytes: tuple[float, float] | None = None) -> None:
    """Datapoints as EC2 and the CloudWatch agent write them; network_bytes: (NetworkIn, NetworkOut) bytes of one
    datapoint interval."""
    cw = cloudwatch_client(endpoint, region)
    when = at or datetime.now(UTC)
    dims = [{"Name": "InstanceId", "Value": instance_id}]
    if cpu is not None:
        cw.put_metric_data(Namespace="AWS/EC2", MetricData=[
            {"MetricName": "CPUUtilization", "Dimensions": dims, "Timestamp": when, "Value": cpu, "Unit": "Percent"}])
    if network_bytes is not None:
        cw.put_metric_data(Namespace="AWS/EC2", MetricData=[
            {"MetricName": name, "Dimensions": dims, "Timestamp": when, "Value": value, "Unit": "Bytes"}
            for name, value in zip(("NetworkIn", "NetworkOut"), network_bytes, strict=True)])
    if memory is not None:
        cw.put_metric_data(Namespace="CWAgent", MetricData=[
            {"MetricName": "mem_used_percent", "Dimensions": dims, "Timestamp": when, "Value": memory,
             "Unit": "Percent"}])


def worker(uid: str, region: str, instance_id: str, **fields: Any) -> worker_pb2.Worker:
    return worker_pb2.Worker(id=f"w-{uid}", name=f"test-{uid}", region=region, instance_id=instance_id,
                             status=fields.pop("status", worker_pb2.WORKER_STATUS_RUNNING), **fields)


async def publish_event(js: JetStreamContext, w: worker_pb2.Worker, event: str = "created") -> None:
    types = {"created": events_pb2.WORKER_EVENT_TYPE_CREATED, "imported": events_pb2.WORKER_EVENT_TYPE_IMPORTED,
             "stopped": events_pb2.WORKER_EVENT_TYPE_STOPPED, "terminated": events_pb2.WORKER_EVENT_TYPE_TERMINATED,
             "status_changed": events_pb2.WORKER_EVENT_TYPE_STATUS_CHANGED}
    event_id = uuid.uuid4().hex
    data, headers = messages.encode(events_pb2.WorkerEvent(event_id=event_id, type=types[event], worker=w),
                                    msg_id=event_id)
    await js.publish(subjects.worker_event(w.id, event), data, headers=headers)


class SampleWatch:
    """Samples of some workers, as they arrive on cml.metrics.>."""

    def __init__(self) -> None:
        self.samples: list[events_pb2.MetricSample] = []
        self.headers: list[dict[str, str]] = []

    async def wait_for(self, predicate: Callable[[events_pb2.MetricSample], bool], timeout: float = 30.0
                       ) -> events_pb2.MetricSample:
        def found() -> events_pb2.MetricSample | None:
            return next((s for s in self.samples if predicate(s)), None)

        try:
            sample: events_pb2.MetricSample = await eventually(found, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"no matching sample within {timeout}s; got {[str(s) for s in self.samples[-5:]]}"
                                 ) from None
        return sample


@pytest.fixture
async def watch(nc: Client) -> AsyncIterator[SampleWatch]:
    w = SampleWatch()

    async def on_msg(msg: Any) -> None:
        w.samples.append(messages.decode(events_pb2.MetricSample, msg.data, msg.headers))
        w.headers.append(dict(msg.headers or {}))

    sub = await nc.subscribe(subjects.METRICS_ALL, cb=on_msg)
    try:
        yield w
    finally:
        await sub.unsubscribe()


class Advisories:
    """What the server says it did with one durable's messages (its MSG_TERMINATED, MSG_NAKED, ... advisories),
    evidence that no other process in the test session can fake."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def about(self, kind: str, stream_seq: int | None) -> list[dict[str, Any]]:
        return [a for k, a in self.seen if k == kind and a.get("stream_seq") == stream_seq]

    async def subjects(self, kind: str, js: JetStreamContext, stream: str) -> set[str]:
        """The subjects of the messages an advisory of this kind was about, of those still in the stream."""
        found = set()
        for seq in {a["stream_seq"] for k, a in self.seen if k == kind}:
            with contextlib.suppress(NotFoundError):
                found.add((await js.get_msg(stream, seq)).subject or "")
        return found


@contextlib.asynccontextmanager
async def advisories(nc: Client, stream: str, durable: str) -> AsyncIterator[Advisories]:
    seen = Advisories()

    async def on_msg(msg: Any) -> None:
        seen.seen.append((msg.subject.split(".")[4], json.loads(msg.data)))  # $JS.EVENT.ADVISORY.CONSUMER.<kind>

    sub = await nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.*.{stream}.{durable}", cb=on_msg)
    try:
        yield seen
    finally:
        await sub.unsubscribe()
