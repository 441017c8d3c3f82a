"""The registry's wire details (registry.adapters.wire) pinned against the generated descriptors: a renumbered
field fails here, not in production."""

from __future__ import annotations

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor

from cml.monitor.internal.v1 import outbox_pb2
from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from registry.adapters import wire

W = worker_pb2

# A KV value written by the registry before the outbox moved to cml.monitor.internal.v1 (then
# cml.monitor.v1.WorkerOutbox in registry_service.proto): Worker(id="w-0123456789abcdef0123", name="cml-1",
# region="us-east-1", instance_id="i-0123456789abcdef0", instance_type="c5.metal", status=RUNNING,
# system_status_check=OK, cpu_utilization=12.5, tags={"team": "lab"}, create_time=1764000000s,
# poll_interval_seconds=60, origin=IMPORTED, requested_status=RUNNING) followed by WorkerOutbox(pending_event=
# PendingWorkerEvent(event_id="0f1e2d3c4b5a69788796a5b4c3d2e1f0", type=STATUS_CHANGED, previous_status=PENDING,
# requested=true, occur_time=1764000060s)).
OLD_VALUE = bytes.fromhex(
    "0a16772d30313233343536373839616263646566303132331205636d6c2d311a0975732d656173742d312213692d3031323334"
    "3536373839616263646566302a0863352e6d6574616c300238014900000000000029405a0b0a047465616d12036c6162620608"
    "808292c90690013c980102a00102a206300a2030663165326433633462356136393738383739366135623463336432653166301005"
    "180120012a0608bc8292c906"
)


def _field(message: type, name: str) -> FieldDescriptor:
    field: FieldDescriptor = message.DESCRIPTOR.fields_by_name[name]  # type: ignore[attr-defined]
    return field


def test_response_field_numbers_match_the_descriptors() -> None:
    get_worker = _field(rs.GetWorkerResponse, "worker")
    list_workers = _field(rs.ListWorkersResponse, "workers")
    next_token = _field(rs.ListWorkersResponse, "next_page_token")
    assert get_worker.number == list_workers.number == wire.WORKER_FIELD
    assert get_worker.message_type is list_workers.message_type is W.Worker.DESCRIPTOR
    assert next_token.number == wire.NEXT_PAGE_TOKEN_FIELD and next_token.type == FieldDescriptor.TYPE_STRING
    assert set(rs.ListWorkersResponse.DESCRIPTOR.fields_by_name) == {"workers", "next_page_token"}
    assert set(rs.GetWorkerResponse.DESCRIPTOR.fields_by_name) == {"worker"}


def test_outbox_field_is_reserved_in_worker() -> None:
    pending = _field(outbox_pb2.WorkerOutbox, "pending_event")
    assert pending.number == wire.OUTBOX_FIELD and pending.message_type is outbox_pb2.PendingWorkerEvent.DESCRIPTOR
    proto = descriptor_pb2.DescriptorProto()
    W.Worker.DESCRIPTOR.CopyToProto(proto)
    assert any(r.start <= wire.OUTBOX_FIELD < r.end for r in proto.reserved_range)
    assert wire.OUTBOX_FIELD not in W.Worker.DESCRIPTOR.fields_by_number


def test_fast_path_bytes_parse_as_the_responses() -> None:
    a = W.Worker(id="w-a", name="a" * 200, status=W.WORKER_STATUS_RUNNING, tags={"k": "v"})
    b = W.Worker(id="w-b", region="eu-west-1")
    assert rs.GetWorkerResponse.FromString(wire.response_worker(a)).worker == a
    page = rs.ListWorkersResponse.FromString(
        wire.response_worker(a) + wire.response_worker(b) + wire.response_page_token("t" * 300))
    assert list(page.workers) == [a, b] and page.next_page_token == "t" * 300
    assert wire.field_bytes(2, b"x" * 300)[:3] == b"\x12\xac\x02"  # tag, then a two-byte varint length


def test_stored_value_parses_as_a_worker_and_keeps_the_outbox() -> None:
    worker = W.Worker(id="w-1", name="n", etag="7")
    data = wire.encode_value(worker, outbox_pb2.PendingWorkerEvent(event_id="e-1"))
    plain = W.Worker.FromString(data)
    assert plain.id == "w-1" and plain.etag == ""  # the etag is the revision, not stored
    decoded, pending = wire.decode_value(data)
    assert (decoded.id, decoded.name, decoded.etag) == ("w-1", "n", "")
    assert pending is not None and pending.event_id == "e-1"
    assert wire.decode_value(wire.encode_value(worker, None))[1] is None


def test_values_stored_by_the_old_message_definitions_still_decode() -> None:
    worker, pending = wire.decode_value(OLD_VALUE)
    assert (worker.id, worker.name, worker.region, worker.instance_id, worker.instance_type) == (
        "w-0123456789abcdef0123", "cml-1", "us-east-1", "i-0123456789abcdef0", "c5.metal")
    assert worker.status == W.WORKER_STATUS_RUNNING and worker.system_status_check == W.STATUS_CHECK_OK
    assert worker.cpu_utilization == 12.5 and dict(worker.tags) == {"team": "lab"}
    assert worker.create_time.seconds == 1_764_000_000 and worker.poll_interval_seconds == 60
    assert worker.origin == W.WORKER_ORIGIN_IMPORTED and worker.requested_status == W.WORKER_STATUS_RUNNING
    assert pending is not None
    assert pending.event_id == "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    assert pending.type == events_pb2.WORKER_EVENT_TYPE_STATUS_CHANGED
    assert pending.previous_status == W.WORKER_STATUS_PENDING and pending.requested
    assert pending.occur_time.seconds == 1_764_000_060
    # and the new code writes the very same bytes for the same state
    assert wire.encode_value(worker, pending) == OLD_VALUE
