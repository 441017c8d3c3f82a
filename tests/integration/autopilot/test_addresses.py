"""The controller address: the cml:url tag, else (CML_URL_FROM_PRIVATE_IP) https:// and the private IP EC2 (moto
over HTTP) reports; an instance EC2 does not know has no address rather than an error."""

from __future__ import annotations

from typing import Any

import aioboto3
import pytest

from autopilot.adapters.addresses import PrivateIpAddresses
from cml.monitor.v1 import worker_pb2
from cmlmon_core.aws import AwsClients
from cmlmon_core.settings import AwsSettings
from tests.integration.autopilot.conftest import AMI, REGION

pytestmark = pytest.mark.integration


async def test_tag_first_then_the_private_ip_then_nothing(aws_endpoint: str) -> None:
    async with aioboto3.Session().client("ec2", region_name=REGION, endpoint_url=aws_endpoint) as ec2:
        run: Any = await ec2.run_instances(ImageId=AMI, InstanceType="c5.metal", MinCount=1, MaxCount=1)
    instance = run["Instances"][0]
    async with AwsClients(AwsSettings(aws_endpoint_url=aws_endpoint)) as aws:
        addresses = PrivateIpAddresses(aws)
        plain = worker_pb2.Worker(id="w-1", region=REGION, instance_id=instance["InstanceId"])
        assert await addresses.url(plain) == f"https://{instance['PrivateIpAddress']}"
        tagged = worker_pb2.Worker(id="w-1", region=REGION, instance_id=instance["InstanceId"],
                                   tags={"cml:url": "https://cml.example"})
        assert await addresses.url(tagged) == "https://cml.example"
        gone = worker_pb2.Worker(id="w-2", region=REGION, instance_id="i-0123456789abcdef0")
        assert await addresses.url(gone) == ""
