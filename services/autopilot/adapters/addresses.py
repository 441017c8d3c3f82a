"""Where a worker's CML controller answers: its `cml:url` tag, or, with CML_URL_FROM_PRIVATE_IP, https:// and
the instance's private IP address read from EC2 (DescribeInstances; remembered per instance, since a VPC
instance keeps its private address across stop and start)."""

from __future__ import annotations

import logging
from typing import Protocol

from botocore.exceptions import BotoCoreError, ClientError

from cml.monitor.v1 import worker_pb2
from cmlmon_core.aws import ClientSource

log = logging.getLogger(__name__)

CML_URL_TAG = "cml:url"


class ControllerAddresses(Protocol):
    async def url(self, worker: worker_pb2.Worker) -> str: ...


class TagAddresses:
    """The `cml:url` tag only; empty when the worker has none."""

    async def url(self, worker: worker_pb2.Worker) -> str:
        return worker.tags.get(CML_URL_TAG, "")


class PrivateIpAddresses:
    """The tag when there is one, else https://<private ip>; empty when EC2 cannot say (logged)."""

    def __init__(self, aws: ClientSource) -> None:
        self._aws = aws
        self._known: dict[str, str] = {}

    async def url(self, worker: worker_pb2.Worker) -> str:
        tagged = worker.tags.get(CML_URL_TAG, "")
        if tagged:
            return tagged
        ip = self._known.get(worker.instance_id)
        if ip is None:
            ip = await self._lookup(worker)
            if ip:
                self._known[worker.instance_id] = ip
        return f"https://{ip}" if ip else ""

    async def _lookup(self, worker: worker_pb2.Worker) -> str:
        try:
            ec2 = await self._aws.get("ec2", worker.region)
            reply = await ec2.describe_instances(InstanceIds=[worker.instance_id])
        except (BotoCoreError, ClientError) as exc:
            log.warning("private address not found", extra={"worker_id": worker.id, "error": repr(exc)})
            return ""
        for reservation in reply.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                return str(instance.get("PrivateIpAddress") or "")
        return ""
