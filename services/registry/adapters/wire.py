"""The registry's protobuf wire details, in one place, each field number pinned against the generated
descriptors by tests/unit/registry/test_wire.py.

- The value layout of KV cml_workers: a serialized `cml.monitor.v1.Worker` followed by a serialized
  `cml.monitor.internal.v1.WorkerOutbox`. Both are the same message as far as the wire goes (field 100 is
  reserved in Worker), so anyone may parse a value as a Worker, and the registry also finds there the lifecycle
  event it has not yet confirmed published.
- The GetWorker/ListWorkers fast path: a response is the join of pre-encoded fields (a worker as field 1,
  the page token as field 2) instead of a message built and serialized per call."""

from __future__ import annotations

from cml.monitor.internal.v1 import outbox_pb2
from cml.monitor.v1 import worker_pb2

WORKER_FIELD = 1  # GetWorkerResponse.worker and ListWorkersResponse.workers
NEXT_PAGE_TOKEN_FIELD = 2  # ListWorkersResponse.next_page_token
OUTBOX_FIELD = 100  # WorkerOutbox.pending_event; reserved in Worker
_LENGTH_DELIMITED = 2  # wire type of messages, strings and bytes

PendingEvent = outbox_pb2.PendingWorkerEvent


def encode_value(worker: worker_pb2.Worker, pending: PendingEvent | None) -> bytes:
    """A KV value: the worker without its etag (the etag is the KV revision), then the pending event if any."""
    clean = worker_pb2.Worker()
    clean.CopyFrom(worker)
    clean.etag = ""
    data = clean.SerializeToString(deterministic=True)
    if pending is not None:
        data += outbox_pb2.WorkerOutbox(pending_event=pending).SerializeToString()
    return data


def decode_value(data: bytes) -> tuple[worker_pb2.Worker, PendingEvent | None]:
    """The worker (etag unset) and the pending event of a KV value."""
    worker = worker_pb2.Worker.FromString(data)
    worker.DiscardUnknownFields()
    outbox = outbox_pb2.WorkerOutbox.FromString(data)
    return worker, outbox.pending_event if outbox.HasField("pending_event") else None


def response_worker(worker: worker_pb2.Worker) -> bytes:
    """The worker as field 1 of GetWorkerResponse, or one entry of ListWorkersResponse.workers."""
    return field_bytes(WORKER_FIELD, worker.SerializeToString(deterministic=True))


def response_page_token(token: str) -> bytes:
    """ListWorkersResponse.next_page_token."""
    return field_bytes(NEXT_PAGE_TOKEN_FIELD, token.encode())


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field holding payload."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)
