"""Generated requests at every RPC of a running `python -m registry`: whatever a client sends, the answer is a
deliberate status (OK, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED), never
UNKNOWN, INTERNAL or UNAVAILABLE."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import registry_service_pb2_grpc as rs_grpc

pytestmark = pytest.mark.integration

SERVICE = rs.DESCRIPTOR.services_by_name["WorkerRegistryService"]
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE}

# Values that reach past the first checks, mixed with arbitrary text.
INTERESTING = ["", "us-east-1", "eu-west-1", "us-gov-west-1", "i-0123456789abcdef0", "i-12345678", "ami-12c6146b",
               "ami-0123456789abcdef0", "w-00000000000000000000", "t3.micro", "c5.metal", "subnet-12345678",
               "sg-12345678", "key", "name.with_dots-1", "a" * 65, "*", ">", "a.b", "..", "cmlmon:worker-id",
               "aws:x", "Name", "\x00", "é", "1", "-1", "99999999999999999999"]
LIVE_IDS: list[str] = []
TIMES = {"google.protobuf.Timestamp", "google.protobuf.Duration"}


def text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(INTERESTING), st.sampled_from(LIVE_IDS) if LIVE_IDS else st.just(""),
                     st.text(max_size=70))


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return text()
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_INT32:
        return st.one_of(st.sampled_from([0, 1, 2, 50, 100, 1000, 1001, -1]), st.integers(-(2**31), 2**31 - 1))
    if t == FieldDescriptor.TYPE_UINT32:
        return st.one_of(st.sampled_from([0, 10, 86_400, 86_401]), st.integers(0, 2**32 - 1))
    if t == FieldDescriptor.TYPE_ENUM:
        values = [v.number for v in field.enum_type.values]  # type: ignore[union-attr]
        return st.one_of(st.sampled_from(values), st.integers(-3, 1000))
    if t == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None and field.message_type.full_name in TIMES:
        return st.fixed_dictionaries({}, optional={  # Timestamp and Duration: out of range values included
            "seconds": st.one_of(st.sampled_from([0, 1, 60, 1_700_000_000, -1, 253_402_300_800]),
                                 st.integers(-(2**63), 2**63 - 1)),
            "nanos": st.one_of(st.sampled_from([0, 1, 999_999_999, -1]), st.integers(-(2**31), 2**31 - 1))})
    if t == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        return request_of(field.message_type)  # a nested message (SetWorkerControllerRequest.controller)
    raise AssertionError(f"no strategy for {field.full_name}")


def request_of(desc: Descriptor) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            fields[field.name] = st.dictionaries(text(), text(), max_size=4)
        elif field.is_repeated:
            fields[field.name] = st.lists(scalar(field), max_size=4)
        else:
            fields[field.name] = scalar(field)
    return st.fixed_dictionaries({}, optional=fields)


@pytest.fixture(scope="module")
def stub(registry_process: str) -> Iterator[rs_grpc.WorkerRegistryServiceStub]:
    with grpc.insecure_channel(registry_process) as channel:
        client = rs_grpc.WorkerRegistryServiceStub(channel)
        worker = client.CreateWorker(rs.CreateWorkerRequest(
            request_id="fuzz-target", name="fuzz-target", region="us-east-1", instance_type="t3.micro",
            ami_id="ami-12c6146b")).worker
        LIVE_IDS[:] = [worker.id, worker.instance_id, worker.etag]
        yield client


@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
@settings(max_examples=75, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_request_gets_an_unintended_status(stub: rs_grpc.WorkerRegistryServiceStub, method: str,
                                              data: st.DataObject) -> None:
    desc = SERVICE.methods_by_name[method]
    cls = getattr(rs, desc.input_type.name)
    request = cls(**data.draw(request_of(desc.input_type), label="request"))
    call = getattr(stub, method)
    try:
        if desc.server_streaming:
            for _ in call(request, timeout=0.5):
                pass
        else:
            call(request, timeout=30)
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
        if desc.server_streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return  # a valid watch stays open until the client gives up
        assert code not in FORBIDDEN, f"{method}({request}) -> {code}: {exc.details()}"  # type: ignore[attr-defined]
