"""The walking skeleton, driven from outside: registry, collector and notifier as separate processes
against a real nats-server and moto's server. Import a worker over gRPC, see its sample on the metrics
stream, and receive the alert for a hot worker on a real HTTP receiver."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import boto3
import grpc
import nats
import pytest

from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as reg_pb2
from cml.monitor.v1 import registry_service_pb2_grpc as reg_grpc
from cmlmon_core import messages
from cmlmon_dev.receiver import WebhookReceiver
from cmlmon_dev.servers import NatsServer
from tests.e2e.conftest import ServiceLauncher

pytestmark = pytest.mark.e2e

REGION = "eu-west-1"


def launch_hot_instance(endpoint: str, name: str) -> str:
    ec2: Any = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    reply = ec2.run_instances(ImageId=image, InstanceType="c5.metal", MinCount=1, MaxCount=1,
                              TagSpecifications=[{"ResourceType": "instance",
                                                  "Tags": [{"Key": "Name", "Value": name}]}])
    return str(reply["Instances"][0]["InstanceId"])


def put_cpu(endpoint: str, instance_id: str, value: float) -> None:
    cw: Any = boto3.client("cloudwatch", region_name=REGION, endpoint_url=endpoint)
    cw.put_metric_data(Namespace="AWS/EC2", MetricData=[{
        "MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
        "Timestamp": datetime.now(UTC), "Value": value, "Unit": "Percent"}])


async def wait_serving(address: str, deadline: float = 30.0) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), deadline)


async def test_import_poll_alert_end_to_end(services: ServiceLauncher, own_nats: NatsServer, aws_endpoint: str,
                                            grpc_port: int, uid: str) -> None:
    instance_id = launch_hot_instance(aws_endpoint, f"hot-{uid}")
    put_cpu(aws_endpoint, instance_id, 97.5)

    async with WebhookReceiver() as receiver:
        services.start("registry", GRPC_PORT=grpc_port)
        fast = {"WORKER_METRICS_POLL_INTERVAL": 2, "CLOUDWATCH_DELAY_SECONDS": 0}
        services.start("collector", REGISTRY_ADDRESS=f"127.0.0.1:{grpc_port}", **fast)
        services.start("notifier", GRPC_PORT=0, WORKER_NOTIFICATION_WEBHOOKS=f"{receiver.url}/hook",
                       ALERT_FOR_SECONDS=0, **fast)
        address = f"127.0.0.1:{grpc_port}"
        await wait_serving(address)

        async with grpc.aio.insecure_channel(address) as channel:
            stub = reg_grpc.WorkerRegistryServiceStub(channel)
            reply = await stub.ImportWorker(reg_pb2.ImportWorkerRequest(region=REGION, instance_id=instance_id),
                                            timeout=20)
        worker = reply.worker
        assert worker.instance_id == instance_id
        assert worker.name == f"hot-{uid}"  # taken from the Name tag

        nc = await nats.connect(own_nats.url)
        try:
            sub = await nc.jetstream().subscribe(f"cml.metrics.{REGION}.{worker.id}", ordered_consumer=True)
            msg = await sub.next_msg(timeout=60)
            sample = messages.decode(events_pb2.MetricSample, msg.data, msg.headers)
            assert sample.worker_id == worker.id
            assert sample.instance_id == instance_id
            assert sample.status == worker_pb2.WORKER_STATUS_RUNNING
            assert sample.cpu_utilization == pytest.approx(97.5)
        finally:
            await nc.drain()

        alert = await receiver.wait_for(lambda r: r.json().get("status") == "firing", timeout=60)
        body = alert.json()
        assert alert.path == "/hook"
        assert body["worker"]["id"] == worker.id
        assert body["worker"]["name"] == f"hot-{uid}"
        assert body["worker"]["instance_id"] == instance_id
        assert body["metric"] == "cpu"
        assert body["value"] == pytest.approx(97.5)
        assert body["threshold"] == pytest.approx(90.0)
