"""Whether a worker's instance is EBS-backed (its RootDeviceType, from ec2:DescribeInstances): only such an
instance may be stopped and started by remediation. Remembered per instance: the root device type of an
instance never changes."""

from __future__ import annotations

from typing import Protocol

from botocore.exceptions import BotoCoreError, ClientError

from autopilot.errors import AutopilotError
from cml.monitor.v1 import worker_pb2
from cmlmon_core.aws import ClientSource


class RootDevices(Protocol):
    async def ebs_backed(self, worker: worker_pb2.Worker) -> bool | None: ...


class NoRootDevices:
    """Without AWS access the root device type is unknown (a failed system check is then escalated)."""

    async def ebs_backed(self, worker: worker_pb2.Worker) -> bool | None:
        return None


class Ec2RootDevices:
    def __init__(self, aws: ClientSource) -> None:
        self._aws = aws
        self._known: dict[str, bool] = {}

    async def ebs_backed(self, worker: worker_pb2.Worker) -> bool | None:
        """None when EC2 does not know the instance; AutopilotError when EC2 cannot be asked now (retried)."""
        known = self._known.get(worker.instance_id)
        if known is not None:
            return known
        try:
            ec2 = await self._aws.get("ec2", worker.region)
            reply = await ec2.describe_instances(InstanceIds=[worker.instance_id])
        except (BotoCoreError, ClientError) as exc:
            raise AutopilotError(f"root device type of {worker.instance_id}: {exc!r}") from exc
        for reservation in reply.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                self._known[worker.instance_id] = instance.get("RootDeviceType") == "ebs"
                return self._known[worker.instance_id]
        return None
