"""A client that knows only server reflection (as grpcurl does): list the services, fetch the file descriptors,
build messages dynamically and call every RPC of WorkerRegistryService, plus the health service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

pytestmark = pytest.mark.integration

SERVICE = "cml.monitor.v1.WorkerRegistryService"


@pytest.fixture(scope="module")
def channel(registry_process: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(registry_process) as ch:
        yield ch


class ReflectionClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.db = ProtoReflectionDescriptorDatabase(channel)
        self.pool = descriptor_pool.DescriptorPool(self.db)

    def services(self) -> list[str]:
        return list(self.db.get_services())

    def message(self, full_name: str, body: dict[str, Any]) -> Any:
        cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))
        return json_format.ParseDict(body, cls())

    def call(self, service: str, method: str, body: dict[str, Any], timeout: float = 30) -> Any:
        desc = self.pool.FindServiceByName(service).FindMethodByName(method)
        request = self.message(desc.input_type.full_name, body)
        output = message_factory.GetMessageClass(desc.output_type)
        path = f"/{service}/{method}"
        if desc.server_streaming:
            stream = self.channel.unary_stream(path, request_serializer=lambda m: m.SerializeToString(),
                                               response_deserializer=output.FromString)(request, timeout=timeout)
            first = next(iter(stream))
            stream.cancel()  # type: ignore[no-untyped-call]
            return json_format.MessageToDict(first)
        unary = self.channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=output.FromString)
        return json_format.MessageToDict(unary(request, timeout=timeout))


def test_reflection_alone_is_enough_to_use_every_rpc(channel: grpc.Channel, uid: str) -> None:
    client = ReflectionClient(channel)
    services = client.services()
    assert SERVICE in services and "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services
    methods = {m.name for m in client.pool.FindServiceByName(SERVICE).methods}
    assert methods == {"CreateWorker", "ImportWorker", "GetWorker", "ListWorkers", "StartWorker", "StopWorker",
                       "RebootWorker", "TerminateWorker", "WatchWorkers", "GetWorkerMetrics",
                       "SetWorkerController"}
    worker_fields = {f.name for f in client.pool.FindMessageTypeByName("cml.monitor.v1.Worker").fields}
    assert {"id", "name", "region", "instance_id", "status", "etag"} <= worker_fields

    health = client.call("grpc.health.v1.Health", "Check", {"service": SERVICE})
    assert health["status"] == "SERVING"

    created = client.call(SERVICE, "CreateWorker", {
        "requestId": f"refl-{uid}", "name": f"refl-{uid}", "region": "us-east-1", "instanceType": "t3.micro",
        "amiId": "ami-12c6146b", "tags": {"test": uid}})["worker"]
    worker_id = created["id"]
    assert created["instanceId"].startswith("i-") and created["status"] in ("WORKER_STATUS_PENDING",
                                                                            "WORKER_STATUS_RUNNING")
    assert client.call(SERVICE, "GetWorker", {"id": worker_id})["worker"]["name"] == f"refl-{uid}"
    listed = client.call(SERVICE, "ListWorkers", {"tags": {"test": uid}, "statuses": ["WORKER_STATUS_PENDING",
                                                                                        "WORKER_STATUS_RUNNING"]})
    assert [w["id"] for w in listed["workers"]] == [worker_id]
    history = client.call(SERVICE, "GetWorkerMetrics", {"workerId": worker_id, "startTime": "2020-01-01T00:00:00Z",
                                                        "step": "300s"})
    assert "nextPageToken" not in history  # a new worker's history: one page, nothing or a few buckets
    watched = client.call(SERVICE, "WatchWorkers", {"region": "us-east-1"})
    assert watched["initial"] is True and "worker" in watched
    stopped = client.call(SERVICE, "StopWorker", {"id": worker_id})["worker"]
    assert stopped["status"] in ("WORKER_STATUS_STOPPING", "WORKER_STATUS_STOPPED")
    with pytest.raises(grpc.RpcError) as refused:
        client.call(SERVICE, "StartWorker", {"id": worker_id})  # still stopping: makes no sense yet
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as not_running:
        client.call(SERVICE, "RebootWorker", {"id": worker_id})  # only a running worker is rebooted
    assert not_running.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    terminated = client.call(SERVICE, "TerminateWorker", {"id": worker_id})["worker"]
    assert terminated["status"] in ("WORKER_STATUS_SHUTTING_DOWN", "WORKER_STATUS_TERMINATED")

    with pytest.raises(grpc.RpcError) as unknown:
        client.call(SERVICE, "ImportWorker", {"region": "us-east-1", "instanceId": "i-0123456789abcdef0"})
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def test_reflection_shows_the_api_and_not_the_registrys_internal_messages(channel: grpc.Channel) -> None:
    client = ReflectionClient(channel)
    assert client.pool.FindMessageTypeByName("cml.monitor.v1.Worker").name == "Worker"
    for internal in ("cml.monitor.internal.v1.WorkerOutbox", "cml.monitor.internal.v1.PendingWorkerEvent",
                     "cml.monitor.v1.WorkerOutbox", "cml.monitor.v1.PendingWorkerEvent"):
        with pytest.raises(KeyError):
            client.pool.FindMessageTypeByName(internal)
