"""Session-wide real servers, in each test process (`make test` runs two): one nats-server (JetStream store in a
temp dir), one moto server and, for the tests that ask for it, one MongoDB-wire server (secantusdb), all on free
loopback ports. Tests isolate themselves by unique ids, never by restarting the servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from cmlmon_core.topology import ensure_topology
from cmlmon_dev.servers import MongoServer, MotoServer, NatsServer
from registry.adapters.mongo import MongoWorkerRepository
from registry.adapters.repository import KvWorkerRepository, WorkerRepository

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
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    """A MongoDB-wire server (secantusdb), started only by the tests that ask for it."""
    store = tmp_path_factory.mktemp("mongodb")
    with MongoServer(store / "data", log_file=store / "secantusd.log") as server:
        yield server


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


class Store:
    """One worker store for a test: its settings for a registry, and repositories on it (each with a client of
    its own, as replicas have). A MongoDB store gets a database of its own per test."""

    def __init__(self, kind: str, js: JetStreamContext, mongodb_uri: str, database: str) -> None:
        self.kind = kind
        self._js = js
        self.settings: dict[str, Any] = {"worker_store": kind}
        if kind == "mongodb":
            self.settings |= {"mongodb_uri": mongodb_uri, "mongodb_database": database}
        self._opened: list[MongoWorkerRepository] = []

    async def open(self) -> WorkerRepository:
        if self.kind == "kv":
            return await KvWorkerRepository.open(self._js)
        repo = await MongoWorkerRepository.open(self.settings["mongodb_uri"], self.settings["mongodb_database"])
        self._opened.append(repo)
        return repo

    async def close(self) -> None:
        for repo in self._opened:
            await repo.close()


@pytest.fixture(params=["kv", "mongodb"])
async def store(request: pytest.FixtureRequest, js: JetStreamContext, uid: str) -> AsyncIterator[Store]:
    """Each test using it runs on both worker stores: the store contract."""
    uri = request.getfixturevalue("mongo_server").uri if request.param == "mongodb" else ""
    opened = Store(request.param, js, uri, f"t-{uid}")
    try:
        yield opened
    finally:
        await opened.close()
