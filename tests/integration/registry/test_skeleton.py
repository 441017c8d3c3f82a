"""The walking skeleton of the registry: create, import, get, list, terminate over gRPC; state in KV; events
on CML_WORKERS; samples from CML_METRICS applied."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_core import messages, subjects
from tests.integration.registry.conftest import AMI, REGION, EventTap, RunningRegistry, eventually, samples_consumed

pytestmark = pytest.mark.integration

E = events_pb2


async def launch_plain_instance(ec2: Any, name: str) -> str:
    result = await ec2.run_instances(ImageId=AMI, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                                     TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                         {"Key": "Name", "Value": name}, {"Key": "team", "Value": "lab"}]}])
    return str(result["Instances"][0]["InstanceId"])


async def publish_sample(js: JetStreamContext, worker: worker_pb2.Worker, **fields: Any) -> None:
    sample = E.MetricSample(worker_id=worker.id, region=worker.region, instance_id=worker.instance_id, **fields)
    sample.observe_time.GetCurrentTime()
    data, headers = messages.encode(sample)
    await js.publish(subjects.metric(worker.region, worker.id), data, headers=headers)


async def test_create_launches_tags_saves_and_announces(registry: RunningRegistry, ec2: Any, tap: EventTap,
                                                        js: JetStreamContext, uid: str) -> None:
    request = rs.CreateWorkerRequest(request_id=f"req-{uid}", name=f"w-{uid}", region=REGION,
                                     instance_type="c5.large", ami_id=AMI, tags={"test": uid})
    created = (await registry.stub.CreateWorker(request)).worker
    assert created.id and created.instance_id.startswith("i-") and created.name == f"w-{uid}"
    assert created.status in (worker_pb2.WORKER_STATUS_PENDING, worker_pb2.WORKER_STATUS_RUNNING)
    assert created.origin == worker_pb2.WORKER_ORIGIN_CREATED and created.tags["test"] == uid
    assert created.root_device_type == worker_pb2.ROOT_DEVICE_TYPE_EBS  # moto's, from the launch's reply

    described = await ec2.describe_instances(InstanceIds=[created.instance_id])
    tags = {t["Key"]: t["Value"] for t in described["Reservations"][0]["Instances"][0]["Tags"]}
    assert tags["Name"] == f"w-{uid}" and tags["cmlmon:worker-id"] == created.id and tags["test"] == uid

    kv = await js.key_value("cml_workers")
    stored = worker_pb2.Worker.FromString((await kv.get(created.id)).value or b"")
    assert stored.instance_id == created.instance_id

    events = await eventually(lambda: tap.of(created.id, E.WORKER_EVENT_TYPE_CREATED))
    headers = next(h for e, h in tap.events if e.worker.id == created.id)
    assert headers["Nats-Msg-Id"] == events[0].event_id and events[0].requested

    again = (await registry.stub.CreateWorker(request)).worker  # a retry: same worker, no second launch
    assert (again.id, again.instance_id) == (created.id, created.instance_id)
    same_token = await ec2.describe_instances(Filters=[{"Name": "tag:test", "Values": [uid]}])
    assert sum(len(r["Instances"]) for r in same_token["Reservations"]) == 1

    got = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=created.id))).worker
    assert got.instance_id == created.instance_id
    listed = (await registry.stub.ListWorkers(rs.ListWorkersRequest(tags={"test": uid}))).workers
    assert [w.id for w in listed] == [created.id]
    assert await events_in_stream_after_a_later_change(registry, js, created.id) == {
        subjects.worker_event(created.id, "created"): 1, subjects.worker_event(created.id, "stopped"): 1}


async def events_in_stream_after_a_later_change(registry: RunningRegistry, js: JetStreamContext, worker_id: str
                                                ) -> dict[str, int]:
    """The worker's subjects in CML_WORKERS and their message counts, read once a StopWorker's event is in the
    stream. Every write publishes the event still pending in the worker's outbox before saving its own, so
    from then on no earlier event of this worker can still be published, now or by a later outbox sweep:
    the counts are final."""
    await registry.stub.StopWorker(rs.StopWorkerRequest(id=worker_id))

    async def stopped() -> bool:
        try:
            await js.get_last_msg("CML_WORKERS", subjects.worker_event(worker_id, "stopped"))
        except NotFoundError:
            return False
        return True
    await eventually(stopped)
    info = await js.stream_info("CML_WORKERS", subjects_filter=f"cml.workers.{worker_id}.*")
    return dict(info.state.subjects or {})


async def test_import_checks_ec2_and_takes_its_name(registry: RunningRegistry, ec2: Any, tap: EventTap,
                                                    uid: str) -> None:
    instance_id = await launch_plain_instance(ec2, f"lab-{uid}")
    worker = (await registry.stub.ImportWorker(rs.ImportWorkerRequest(region=REGION, instance_id=instance_id))).worker
    assert worker.name == f"lab-{uid}" and worker.instance_type == "t3.micro" and worker.tags["team"] == "lab"
    assert worker.origin == worker_pb2.WORKER_ORIGIN_IMPORTED
    assert worker.root_device_type == worker_pb2.ROOT_DEVICE_TYPE_EBS  # moto's, from DescribeInstances
    await eventually(lambda: tap.of(worker.id, E.WORKER_EVENT_TYPE_IMPORTED))

    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await registry.stub.ImportWorker(rs.ImportWorkerRequest(region=REGION, instance_id=instance_id))
    assert twice.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await registry.stub.ImportWorker(rs.ImportWorkerRequest(region=REGION, instance_id="i-0123456789abcdef0"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await registry.stub.GetWorker(rs.GetWorkerRequest(id="w-00000000000000000000"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_samples_update_worker_and_status_changes_once(registry: RunningRegistry, ec2: Any, tap: EventTap,
                                                             js: JetStreamContext, uid: str) -> None:
    instance_id = await launch_plain_instance(ec2, f"obs-{uid}")
    worker = (await registry.stub.ImportWorker(rs.ImportWorkerRequest(region=REGION, instance_id=instance_id))).worker
    assert worker.status == worker_pb2.WORKER_STATUS_RUNNING

    await publish_sample(js, worker, status=worker_pb2.WORKER_STATUS_RUNNING, ec2_state="running",
                         cpu_utilization=97.5, memory_utilization=40.0, system_status_check=worker_pb2.STATUS_CHECK_OK,
                         instance_status_check=worker_pb2.STATUS_CHECK_OK)

    async def cpu_seen() -> bool:
        got = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
        return got.HasField("cpu_utilization") and got.cpu_utilization == 97.5

    await eventually(cpu_seen)
    got = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
    assert got.memory_utilization == 40.0 and got.system_status_check == worker_pb2.STATUS_CHECK_OK
    assert got.HasField("last_seen_time")
    assert tap.of(worker.id, E.WORKER_EVENT_TYPE_STATUS_CHANGED) == []

    for _ in range(2):  # the same status twice: one event
        await publish_sample(js, worker, status=worker_pb2.WORKER_STATUS_STOPPED, ec2_state="stopped")
    changed = await eventually(lambda: tap.of(worker.id, E.WORKER_EVENT_TYPE_STATUS_CHANGED))
    assert changed[0].worker.status == worker_pb2.WORKER_STATUS_STOPPED
    assert changed[0].previous_status == worker_pb2.WORKER_STATUS_RUNNING and not changed[0].requested

    for _ in range(2):
        await publish_sample(js, worker, status=worker_pb2.WORKER_STATUS_TERMINATED, ec2_state="terminated")
    await eventually(lambda: tap.of(worker.id, E.WORKER_EVENT_TYPE_TERMINATED))
    await publish_sample(js, worker, status=worker_pb2.WORKER_STATUS_RUNNING, ec2_state="running")
    marker = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
    # a later sample cannot resurrect a terminated worker; wait until the consumer has passed it
    await publish_sample(js, worker, status=worker_pb2.WORKER_STATUS_RUNNING, cpu_utilization=1.0)
    await samples_consumed(js)
    final = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
    assert final.status == marker.status == worker_pb2.WORKER_STATUS_TERMINATED
    assert len(tap.of(worker.id, E.WORKER_EVENT_TYPE_STATUS_CHANGED)) == 1
    assert len(tap.of(worker.id, E.WORKER_EVENT_TYPE_TERMINATED)) == 1



async def test_terminate_calls_ec2_and_is_idempotent(registry: RunningRegistry, ec2: Any, tap: EventTap,
                                                     uid: str) -> None:
    request = rs.CreateWorkerRequest(request_id=f"term-{uid}", name=f"t-{uid}", region=REGION,
                                     instance_type="t3.micro", ami_id=AMI)
    worker = (await registry.stub.CreateWorker(request)).worker
    done = (await registry.stub.TerminateWorker(rs.TerminateWorkerRequest(id=worker.id))).worker
    assert done.status in (worker_pb2.WORKER_STATUS_SHUTTING_DOWN, worker_pb2.WORKER_STATUS_TERMINATED)
    state = (await ec2.describe_instances(InstanceIds=[worker.instance_id]))["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] in ("shutting-down", "terminated")
    again = (await registry.stub.TerminateWorker(rs.TerminateWorkerRequest(id=worker.id))).worker
    assert again.status == done.status and again.etag == done.etag


async def test_instance_ec2_no_longer_knows_is_terminated_after_the_grace_period(
        registry: RunningRegistry, ec2: Any, tap: EventTap, js: JetStreamContext, uid: str) -> None:
    instance_id = await launch_plain_instance(ec2, f"gone-{uid}")
    worker = (await registry.stub.ImportWorker(rs.ImportWorkerRequest(region=REGION, instance_id=instance_id))).worker
    grace = registry.settings.registry_missing_grace_seconds

    async def missing_at(age: float) -> None:
        sample = E.MetricSample(worker_id=worker.id, region=REGION, instance_id=instance_id, instance_missing=True,
                                status=worker_pb2.WORKER_STATUS_TERMINATED)
        sample.observe_time.GetCurrentTime()
        sample.observe_time.seconds -= int(age)
        data, headers = messages.encode(sample)
        await js.publish(subjects.metric(REGION, worker.id), data, headers=headers)

    await missing_at(grace + 100)  # first seen missing long ago ...
    await missing_at(grace + 50)   # ... and still within the grace period 50 s later: nothing happens

    async def missing_since_set() -> bool:
        got = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
        return got.HasField("missing_since_time")

    await eventually(missing_since_set)
    await samples_consumed(js)
    got = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
    assert got.status == worker_pb2.WORKER_STATUS_RUNNING and not tap.of(worker.id, E.WORKER_EVENT_TYPE_TERMINATED)
    await missing_at(0)  # the grace period is over
    terminated = (await eventually(lambda: tap.of(worker.id, E.WORKER_EVENT_TYPE_TERMINATED)))[0]
    assert terminated.worker.status == worker_pb2.WORKER_STATUS_TERMINATED and not terminated.requested


async def test_undecodable_sample_is_terminated_and_the_consumer_carries_on(
        registry: RunningRegistry, ec2: Any, js: JetStreamContext, uid: str) -> None:
    instance_id = await launch_plain_instance(ec2, f"junk-{uid}")
    worker = (await registry.stub.ImportWorker(rs.ImportWorkerRequest(region=REGION, instance_id=instance_id))).worker
    subject = subjects.metric(REGION, worker.id)
    await js.publish(subject, b"\xff\xfe not protobuf", headers={"Content-Type": "application/protobuf; proto="
                                                                                "cml.monitor.v1.MetricSample"})
    await js.publish(subject, b"", headers={"Content-Type": "application/json"})
    await publish_sample(js, worker, status=worker_pb2.WORKER_STATUS_RUNNING, cpu_utilization=12.5)

    async def applied() -> bool:
        got = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
        return got.HasField("cpu_utilization") and got.cpu_utilization == 12.5

    await eventually(applied)
    await samples_consumed(js)  # nothing left pending or awaiting redelivery
