"""The document layout of the MongoDB worker store (collection `workers`), in one place.

`_id` is the worker id; `version` counts the writes (the etag, and the filter of every compare-and-set);
`worker` is the serialized `cml.monitor.v1.Worker` without its etag and `pending` the serialized
`cml.monitor.internal.v1.PendingWorkerEvent` of the outbox, or null. `name`, `region`, `instance_id` and
`status` repeat fields of `worker` for people and tools reading the collection (mongosh, backups); the
registry reads only `worker`, `pending` and `version`."""

from __future__ import annotations

from typing import Any

from cml.monitor.v1 import worker_pb2
from registry.adapters.repository import Stored
from registry.adapters.wire import PendingEvent


def encode_worker(worker: worker_pb2.Worker, pending: PendingEvent | None, version: int) -> dict[str, Any]:
    clean = worker_pb2.Worker()
    clean.CopyFrom(worker)
    clean.etag = ""
    return {
        "_id": worker.id,
        "version": version,
        "worker": clean.SerializeToString(deterministic=True),
        "pending": None if pending is None else pending.SerializeToString(deterministic=True),
        "name": worker.name,
        "region": worker.region,
        "instance_id": worker.instance_id,
        "status": worker_pb2.WorkerStatus.Name(worker.status),
    }


def decode_worker(doc: dict[str, Any]) -> Stored:
    version = int(doc["version"])
    worker = worker_pb2.Worker.FromString(bytes(doc["worker"]))
    worker.etag = str(version)
    pending = doc.get("pending")
    return Stored(worker, version, None if pending is None else PendingEvent.FromString(bytes(pending)))
