"""A registry running in this test's event loop (real NATS, real moto, real gRPC over loopback), and helpers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aioboto3
import grpc
import pytest
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from cml.monitor.v1 import events_pb2
from cml.monitor.v1 import registry_service_pb2_grpc as rs_grpc
from cmlmon_core import messages
from cmlmon_dev.servers import free_port, wait_for_port
from registry.entrypoints.main import run
from registry.settings import RegistrySettings
from tests.support import eventually as eventually  # re-exported: the registry tests import it from here

REGION = "us-east-1"
AMI = "ami-12c6146b"


@dataclass
class RunningRegistry:
    address: str
    stub: rs_grpc.WorkerRegistryServiceAsyncStub
    channel: grpc.aio.Channel
    settings: RegistrySettings
    stop: asyncio.Event


def registry_settings(nats_url: str, aws_endpoint: str, **extra: Any) -> RegistrySettings:
    return RegistrySettings(nats_url=nats_url, aws_endpoint_url=aws_endpoint, grpc_port=free_port(),
                            grpc_host="127.0.0.1", metrics_port=0, log_format="text", **extra)


@contextlib.asynccontextmanager
async def running_registry(settings: RegistrySettings) -> AsyncIterator[RunningRegistry]:
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    address = f"127.0.0.1:{settings.grpc_port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        await asyncio.wait_for(channel.channel_ready(), 30)
        yield RunningRegistry(address, rs_grpc.WorkerRegistryServiceStub(channel), channel, settings, stop)
    finally:
        await channel.close(None)
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def registry(nats_url: str, aws_endpoint: str, js: JetStreamContext) -> AsyncIterator[RunningRegistry]:
    async with running_registry(registry_settings(nats_url, aws_endpoint)) as running:
        yield running


@pytest.fixture
async def ec2(aws_endpoint: str) -> AsyncIterator[Any]:
    async with aioboto3.Session().client("ec2", region_name=REGION, endpoint_url=aws_endpoint) as client:
        yield client


class EventTap:
    """Every WorkerEvent published on the subjects of some workers, with its headers."""

    def __init__(self) -> None:
        self.events: list[tuple[events_pb2.WorkerEvent, dict[str, str]]] = []

    def of(self, worker_id: str, kind: int | None = None) -> list[events_pb2.WorkerEvent]:
        return [e for e, _ in self.events if e.worker.id == worker_id and (kind is None or e.type == kind)]


@pytest.fixture
async def tap(js: JetStreamContext) -> AsyncIterator[EventTap]:
    """Reads CML_WORKERS from now on through an ordered consumer (the stream's view, duplicates dropped)."""
    found = EventTap()

    async def on_msg(msg: Any) -> None:
        found.events.append((messages.decode(events_pb2.WorkerEvent, msg.data, msg.headers), dict(msg.headers)))

    sub = await js.subscribe("cml.workers.>", cb=on_msg, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    yield found
    await sub.unsubscribe()


async def samples_consumed(js: JetStreamContext, timeout: float = 45.0) -> None:
    """Wait until the shared durable "registry" has nothing pending and nothing awaiting its ack. A sample that
    a registry stopped by an earlier test had fetched comes back only after AckWait (30 s): hence the timeout."""

    async def idle() -> bool:
        info = await js.consumer_info("CML_METRICS", "registry")
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await eventually(idle, timeout=timeout)


@pytest.fixture(scope="module")
def registry_process(nats_url: str, aws_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m registry` as its own process (as deployed); yields its gRPC address."""
    port = free_port()
    log = tmp_path_factory.mktemp("registry") / "registry.log"
    env = {**os.environ, "NATS_URL": nats_url, "AWS_ENDPOINT_URL": aws_endpoint, "GRPC_PORT": str(port),
           "METRICS_PORT": "0", "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "registry"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 60)
        yield f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(20) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
