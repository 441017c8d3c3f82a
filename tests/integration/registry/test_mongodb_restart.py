"""MongoDB restarted under a running registry: the change stream is resumed from its resume token, so the
listing view misses no update and lists nothing again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path

import grpc
import pytest
from nats.js import JetStreamContext

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import worker_pb2
from cmlmon_dev.servers import MongoServer
from registry.adapters.mongo import MongoWorkerRepository
from registry.adapters.repository import Stored
from tests.integration.registry.conftest import REGION, registry_settings, running_registry
from tests.support import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def own_mongo(tmp_path: Path) -> Iterator[MongoServer]:
    """A MongoDB-wire server for this test alone: it is restarted."""
    with MongoServer(tmp_path / "mongodb", log_file=tmp_path / "secantusd.log") as server:
        yield server


@pytest.fixture
async def writer(own_mongo: MongoServer, uid: str) -> AsyncIterator[MongoWorkerRepository]:
    repo = await MongoWorkerRepository.open(own_mongo.uri, f"t-{uid}", server_selection_seconds=20)
    yield repo
    await repo.close()


def worker(worker_id: str) -> worker_pb2.Worker:
    return worker_pb2.Worker(id=worker_id, name=worker_id, region=REGION, instance_id="i-0123456789abcdef0",
                             status=worker_pb2.WORKER_STATUS_RUNNING)


class HeldReconnect:
    """The reader's pause before reconnecting, held until the test lets it go: the write below then surely
    happens while the reader's change stream is down."""

    def __init__(self) -> None:
        self.lost = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.lost.set()
        await self.release.wait()


async def test_the_change_stream_resumes_from_its_token_after_a_restart(
        own_mongo: MongoServer, writer: MongoWorkerRepository, uid: str) -> None:
    held = HeldReconnect()
    reader = await MongoWorkerRepository.open(own_mongo.uri, f"t-{uid}", server_selection_seconds=0.5, sleep=held)
    watch = reader.watch()
    following: asyncio.Future[Stored | None] | None = None
    try:
        await writer.create(worker(f"w-{uid}-a"), None)
        assert (await anext(watch)).worker.id == f"w-{uid}-a"  # type: ignore[union-attr]
        assert await anext(watch) is None  # listed: caught up
        following = asyncio.ensure_future(anext(watch))
        await asyncio.to_thread(own_mongo.stop)
        await asyncio.wait_for(held.lost.wait(), 60)  # the reader saw its stream fail
        await asyncio.to_thread(own_mongo.start)
        await writer.create(worker(f"w-{uid}-b"), None)  # while the reader is not watching
        held.release.set()
        after = await asyncio.wait_for(following, 60)
        # resumed from the token: "b" arrives, and "a" is not listed again
        assert after is not None and after.worker.id == f"w-{uid}-b"
    finally:
        if following is not None and not following.done():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        await watch.aclose()  # type: ignore[attr-defined]  # an async generator
        await reader.close()


async def test_a_registry_sees_writes_made_while_its_mongodb_restarted(
        own_mongo: MongoServer, writer: MongoWorkerRepository, nats_url: str, aws_endpoint: str,
        js: JetStreamContext, uid: str) -> None:
    settings = registry_settings(nats_url, aws_endpoint, worker_store="mongodb", mongodb_uri=own_mongo.uri,
                                 mongodb_database=f"t-{uid}", mongodb_server_selection_seconds=1)
    async with running_registry(settings) as registry:
        await writer.create(worker(f"w-{uid}-a"), None)  # another replica's write

        async def listed() -> set[str]:
            return {w.id for w in (await registry.stub.ListWorkers(rs.ListWorkersRequest(), timeout=10)).workers}

        await eventually(lambda: _has(listed(), f"w-{uid}-a"), timeout=30)
        await asyncio.to_thread(own_mongo.stop)
        with pytest.raises(grpc.aio.AioRpcError) as down:  # a write needs the store: UNAVAILABLE, not UNKNOWN
            await registry.stub.StopWorker(rs.StopWorkerRequest(id=f"w-{uid}-a"), timeout=30)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        await asyncio.to_thread(own_mongo.start)
        await writer.create(worker(f"w-{uid}-b"), None)
        await eventually(lambda: _has(listed(), f"w-{uid}-b"), timeout=60)


async def _has(ids: Awaitable[set[str]], worker_id: str) -> bool:
    return worker_id in await ids
