"""Session-wide real servers: one nats-server (JetStream store in a temp dir) and one moto server, both on
free loopback ports. Tests isolate themselves by unique ids, never by restarting the servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from cmlmon_core.topology import ensure_topology
from cmlmon_dev.servers import MotoServer, NatsServer

# Fake credentials for moto; set before anything creates an AWS client.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
# Services refuse to start without gRPC authentication unless told to serve open; the tests that are not about
# authentication run open (every process they start inherits this), the security tests configure it explicitly.
os.environ.setdefault("GRPC_AUTH", "none")


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    store = tmp_path_factory.mktemp("jetstream")
    with NatsServer(store, log_file=Path(store) / "nats-server.log") as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def aws_endpoint(moto_server: MotoServer) -> str:
    return moto_server.url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.drain()


@pytest.fixture
async def js(nc: Client) -> JetStreamContext:
    ctx = nc.jetstream()
    await ensure_topology(ctx)
    return ctx


@pytest.fixture
def uid() -> str:
    """A short unique id for names, so tests sharing the servers never collide."""
    return uuid.uuid4().hex[:10]
