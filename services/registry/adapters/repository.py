"""Worker state: the port, and its NATS KV adapter (bucket cml_workers, one key per worker, CAS by revision).

A value's layout (a Worker followed by the outbox of its pending lifecycle event) is in registry.adapters.wire.
The etag of a worker is its KV revision."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KV_DEL, KV_PURGE

from cml.monitor.v1 import worker_pb2
from cmlmon_core.topology import REGISTRY_BUCKET
from registry.adapters import wire
from registry.adapters.wire import PendingEvent
from registry.errors import Conflict, Unavailable

log = logging.getLogger(__name__)

INDEX_BUCKET = REGISTRY_BUCKET  # in the topology, so it has NATS_STREAM_REPLICAS replicas like every bucket
_SECRET_KEY = "secret.page-token"


@dataclass(slots=True)
class Stored:
    """A worker as stored: its state, its KV revision, and the event saved with it, if any."""

    worker: worker_pb2.Worker
    revision: int
    pending: PendingEvent | None = None


@dataclass(slots=True)
class Claim:
    """Which worker owns an EC2 instance (the index that makes ALREADY_EXISTS atomic)."""

    worker_id: str
    revision: int
    claimed_at: float = 0.0  # unix time of the claim


class WorkerRepository(Protocol):
    async def get(self, worker_id: str) -> Stored | None: ...
    async def create(self, worker: worker_pb2.Worker, pending: PendingEvent | None
                     ) -> Stored: ...
    async def update(self, worker: worker_pb2.Worker, pending: PendingEvent | None,
                     revision: int) -> Stored: ...
    def watch(self) -> AsyncIterator[Stored | None]: ...
    async def get_claim(self, region: str, instance_id: str) -> Claim | None: ...
    async def put_claim(self, region: str, instance_id: str, worker_id: str, revision: int | None) -> None: ...
    async def shared_secret(self, proposed: bytes) -> bytes: ...


def decode_value(data: bytes, revision: int) -> Stored:
    worker, pending = wire.decode_value(data)
    worker.etag = str(revision)
    return Stored(worker, revision, pending)


def _claim_key(region: str, instance_id: str) -> str:
    return f"instance.{region}.{instance_id}"


class KvWorkerRepository:
    """WorkerRepository on NATS KV."""

    def __init__(self, workers: Any, index: Any) -> None:
        self._kv = workers
        self._index = index

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str = "cml_workers") -> KvWorkerRepository:
        workers = await js.key_value(bucket)
        try:
            index = await js.key_value(INDEX_BUCKET)
        except nats.js.errors.BucketNotFoundError:
            index = await js.create_key_value(KeyValueConfig(
                bucket=INDEX_BUCKET, description="registry internals: instance ownership, shared keys",
                history=1, storage=StorageType.FILE))
        return cls(workers, index)

    async def get(self, worker_id: str) -> Stored | None:
        try:
            entry = await self._kv.get(worker_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable(f"reading worker {worker_id}: {exc!r}") from exc
        return decode_value(entry.value or b"", entry.revision)

    async def create(self, worker: worker_pb2.Worker, pending: PendingEvent | None
                     ) -> Stored:
        data = wire.encode_value(worker, pending)
        try:
            revision = await self._kv.create(worker.id, data)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise Conflict(f"worker {worker.id} exists") from exc
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable(f"creating worker {worker.id}: {exc!r}") from exc
        return decode_value(data, revision)

    async def update(self, worker: worker_pb2.Worker, pending: PendingEvent | None,
                     revision: int) -> Stored:
        data = wire.encode_value(worker, pending)
        try:
            new_revision = await self._kv.update(worker.id, data, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise Conflict(f"worker {worker.id} changed since revision {revision}") from exc
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable(f"updating worker {worker.id}: {exc!r}") from exc
        return decode_value(data, new_revision)

    async def watch(self) -> AsyncIterator[Stored | None]:
        """Every worker as it is now, then None (caught up), then every change, until cancelled."""
        watcher = await self._kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    yield None
                elif entry.operation not in (KV_DEL, KV_PURGE) and entry.value:
                    yield decode_value(entry.value, entry.revision)
        finally:
            try:
                await watcher.stop()
            except Exception as exc:  # connection already closing on shutdown
                log.debug("kv watcher stop failed", extra={"error": repr(exc)})

    async def get_claim(self, region: str, instance_id: str) -> Claim | None:
        try:
            entry = await self._index.get(_claim_key(region, instance_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable(f"reading instance index: {exc!r}") from exc
        worker_id, _, claimed_at = (entry.value or b"").decode().partition(" ")
        try:
            return Claim(worker_id, entry.revision, float(claimed_at or 0))
        except ValueError:
            return Claim(worker_id, entry.revision)

    async def put_claim(self, region: str, instance_id: str, worker_id: str, revision: int | None) -> None:
        """Record worker_id as the owner: create when revision is None, else CAS on it (Conflict if lost)."""
        key = _claim_key(region, instance_id)
        value = f"{worker_id} {time.time():.3f}".encode()
        try:
            if revision is None:
                await self._index.create(key, value)
            else:
                await self._index.update(key, value, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise Conflict(f"instance {instance_id} claimed concurrently") from exc
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable(f"writing instance index: {exc!r}") from exc

    async def shared_secret(self, proposed: bytes) -> bytes:
        """A key every registry replica agrees on: the first one to start stores its proposal."""
        with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
            await self._index.create(_SECRET_KEY, proposed)
        entry = await self._index.get(_SECRET_KEY)
        return bytes(entry.value or b"")
