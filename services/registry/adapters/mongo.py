"""Worker state in MongoDB through PyMongo's async API (WORKER_STORE=mongodb), behind the same port as the KV
store (registry.adapters.repository.WorkerRepository), with the same behaviour.

Collections of MONGODB_DATABASE (the document layout is in registry.adapters.documents):
- `workers`: one document per worker; its `version` is the etag and every write is a compare-and-set
  (find_one_and_update filtered on the version read); the outbox event is stored in the same document.
- `claims`: which worker owns an EC2 instance; a unique index on (region, instance_id) makes a claim atomic.
- `registry`: internals (the page-token key every replica shares).

Indexes are created at start (idempotent: creating an existing index is a no-op). The listing view follows a
change stream on `workers`, resumed from its resume token after a lost connection."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import ConnectionFailure, DuplicateKeyError, OperationFailure, PyMongoError

from cml.monitor.v1 import worker_pb2
from registry.adapters import documents
from registry.adapters.repository import Claim, Stored
from registry.adapters.wire import PendingEvent
from registry.errors import Conflict, Unavailable

log = logging.getLogger(__name__)

Doc = dict[str, Any]
_SECRET_ID = "page-token-secret"
_WATCHED = ("insert", "update", "replace")


def backoff_delay(attempt: int, *, base: float = 0.2, cap: float = 10.0,
                  rand: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential back-off: a random pause up to min(cap, base * 2**attempt)."""
    return float(rand() * min(cap, base * 2 ** min(attempt, 16)))


def hosts_of(uri: str) -> str:
    """The host list of a MongoDB URI, without scheme, credentials or options: what may be logged."""
    rest = uri.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1].split("/", 1)[0].split("?", 1)[0]


def _unavailable(action: str, exc: PyMongoError) -> Unavailable:
    return Unavailable(f"{action}: MongoDB {type(exc).__name__}: {exc}")


class MongoWorkerRepository:
    """WorkerRepository on a MongoDB database."""

    def __init__(self, client: AsyncMongoClient[Doc], database: str, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._client = client
        self._sleep = sleep  # the pause between reconnection attempts (tests hold it)
        db = client[database]
        self._workers: AsyncCollection[Doc] = db["workers"]
        self._claims: AsyncCollection[Doc] = db["claims"]
        self._internals: AsyncCollection[Doc] = db["registry"]

    @classmethod
    async def open(cls, uri: str, database: str, *, server_selection_seconds: float = 5.0,
                   sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> MongoWorkerRepository:
        """Connect and create the indexes, retrying with back-off while MongoDB cannot be reached (the caller
        cancels this to give up, e.g. on SIGTERM)."""
        client: AsyncMongoClient[Doc] = AsyncMongoClient(
            uri, serverSelectionTimeoutMS=int(server_selection_seconds * 1000), appname="cmlmon-registry")
        repo = cls(client, database, sleep=sleep)
        try:
            attempt = 0
            while True:
                try:
                    await repo.ensure_indexes()
                    log.info("mongodb store ready", extra={"mongodb": hosts_of(uri), "database": database})
                    return repo
                except PyMongoError as exc:
                    delay = backoff_delay(attempt)
                    log.warning("mongodb unreachable; retrying", extra={
                        "mongodb": hosts_of(uri), "error": type(exc).__name__, "retry_in": round(delay, 2)})
                    attempt += 1
                    await repo._sleep(delay)
        except BaseException:
            await client.close()
            raise

    async def close(self) -> None:
        await self._client.close()

    async def ensure_indexes(self) -> None:
        await self._claims.create_index([("region", ASCENDING), ("instance_id", ASCENDING)], unique=True,
                                        name="one_owner_per_instance")

    # --- workers -------------------------------------------------------------------------------------------

    async def get(self, worker_id: str) -> Stored | None:
        try:
            doc = await self._workers.find_one({"_id": worker_id})
        except PyMongoError as exc:
            raise _unavailable(f"reading worker {worker_id}", exc) from exc
        return None if doc is None else documents.decode_worker(doc)

    async def create(self, worker: worker_pb2.Worker, pending: PendingEvent | None) -> Stored:
        doc = documents.encode_worker(worker, pending, version=1)
        try:
            await self._workers.insert_one(doc)
        except DuplicateKeyError as exc:
            raise Conflict(f"worker {worker.id} exists") from exc
        except PyMongoError as exc:
            raise _unavailable(f"creating worker {worker.id}", exc) from exc
        return documents.decode_worker(doc)

    async def update(self, worker: worker_pb2.Worker, pending: PendingEvent | None, revision: int) -> Stored:
        doc = documents.encode_worker(worker, pending, version=revision + 1)
        try:
            found = await self._workers.find_one_and_update(
                {"_id": worker.id, "version": revision}, {"$set": {k: v for k, v in doc.items() if k != "_id"}},
                return_document=ReturnDocument.AFTER)
        except PyMongoError as exc:
            raise _unavailable(f"updating worker {worker.id}", exc) from exc
        if found is None:
            raise Conflict(f"worker {worker.id} changed since revision {revision}")
        return documents.decode_worker(found)

    async def watch(self) -> AsyncIterator[Stored | None]:
        """Every worker as it is now, then None (caught up), then every change, until cancelled. A lost
        connection is retried with back-off and the change stream resumed from its last resume token, so no
        change is missed and nothing is listed again; only a token the server no longer knows lists again."""
        stream = await self._open_stream(None)  # opened before the listing: a write in between is not missed
        try:
            async for doc in self._workers.find({}):
                yield documents.decode_worker(doc)
            yield None
            attempt = 0
            while True:
                try:
                    async for change in stream:
                        attempt = 0
                        full = change.get("fullDocument")
                        if change.get("operationType") in _WATCHED and full is not None:
                            yield documents.decode_worker(full)
                except PyMongoError as exc:
                    token = stream.resume_token
                    await stream.close()
                    delay = backoff_delay(attempt)
                    attempt += 1
                    log.warning("mongodb change stream lost; resuming", extra={
                        "error": type(exc).__name__, "retry_in": round(delay, 2)})
                    await self._sleep(delay)
                    stream, relist = await self._reopen_stream(token)
                    if relist:
                        async for doc in self._workers.find({}):
                            yield documents.decode_worker(doc)
        finally:
            await stream.close()

    async def _open_stream(self, resume_after: Mapping[str, Any] | None) -> AsyncChangeStream[Doc]:
        return await self._workers.watch(full_document="updateLookup", resume_after=resume_after)

    async def _reopen_stream(self, token: Mapping[str, Any] | None) -> tuple[AsyncChangeStream[Doc], bool]:
        """The stream resumed after token, and False; or, without a token or when the server no longer has it
        (its oplog moved on), a new stream and True: the caller lists every worker again."""
        attempt = 0
        while True:
            try:
                if token is None:
                    return await self._open_stream(None), True
                return await self._open_stream(token), False
            except ConnectionFailure as exc:
                delay = backoff_delay(attempt)
                attempt += 1
                log.warning("mongodb change stream not resumed yet", extra={"error": type(exc).__name__})
                await self._sleep(delay)
            except OperationFailure as exc:
                log.warning("mongodb change stream cannot resume; listing every worker again",
                            extra={"error": str(exc)})
                token = None

    # --- instance claims ---------------------------------------------------------------------------------------

    async def get_claim(self, region: str, instance_id: str) -> Claim | None:
        try:
            doc = await self._claims.find_one({"region": region, "instance_id": instance_id})
        except PyMongoError as exc:
            raise _unavailable("reading instance claims", exc) from exc
        if doc is None:
            return None
        return Claim(str(doc["worker_id"]), int(doc["version"]), float(doc.get("claimed_at", 0.0)))

    async def put_claim(self, region: str, instance_id: str, worker_id: str, revision: int | None) -> None:
        """Record worker_id as the owner: create when revision is None, else CAS on it (Conflict if lost)."""
        now = time.time()
        try:
            if revision is None:
                await self._claims.insert_one({"region": region, "instance_id": instance_id,
                                               "worker_id": worker_id, "version": 1, "claimed_at": now})
                return
            found = await self._claims.find_one_and_update(
                {"region": region, "instance_id": instance_id, "version": revision},
                {"$set": {"worker_id": worker_id, "claimed_at": now}, "$inc": {"version": 1}})
        except DuplicateKeyError as exc:
            raise Conflict(f"instance {instance_id} claimed concurrently") from exc
        except PyMongoError as exc:
            raise _unavailable("writing instance claims", exc) from exc
        if found is None:
            raise Conflict(f"instance {instance_id} claimed concurrently")

    async def shared_secret(self, proposed: bytes) -> bytes:
        """A key every registry replica agrees on: the first one to start stores its proposal."""
        try:
            await self._internals.update_one({"_id": _SECRET_ID}, {"$setOnInsert": {"value": proposed}},
                                             upsert=True)
            doc = await self._internals.find_one({"_id": _SECRET_ID})
        except DuplicateKeyError:  # two replicas upserting at once: the other one won
            doc = await self._internals.find_one({"_id": _SECRET_ID})
        except PyMongoError as exc:
            raise _unavailable("reading the shared page-token key", exc) from exc
        if doc is None:
            raise Unavailable("the shared page-token key vanished")
        return bytes(doc["value"])
