"""EC2 behind a small port: launch, look up, start, stop, reboot, terminate. botocore errors become registry errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from cml.monitor.v1 import worker_pb2
from cmlmon_core.aws import ClientSource
from cmlmon_core.status import worker_status
from registry.errors import Ec2Error, FailedPrecondition, InvalidArgument, NotFound, Unavailable

_NOT_FOUND = {"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"}
# Launch errors that mean "this field of the request is wrong": reported as INVALID_ARGUMENT naming it.
_LAUNCH_FIELDS = {
    "InvalidAMIID": "ami_id",
    "InvalidSubnetID": "subnet_id",
    "InvalidSubnet": "subnet_id",
    "InvalidGroup": "security_group_ids",
    "InvalidGroupId": "security_group_ids",
    "InvalidKeyPair": "key_name",
    "InvalidInstanceType": "instance_type",
    "Unsupported": "instance_type",
}
_ROOT_DEVICE_TYPES = {"ebs": worker_pb2.ROOT_DEVICE_TYPE_EBS,
                      "instance-store": worker_pb2.ROOT_DEVICE_TYPE_INSTANCE_STORE}
_RETRYABLE = {"RequestLimitExceeded", "Throttling", "ThrottlingException", "InternalError", "ServiceUnavailable",
              "Unavailable", "InsufficientInstanceCapacity"}


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """What CreateWorker asks EC2 for."""

    region: str
    instance_type: str
    ami_id: str
    client_token: str
    tags: dict[str, str]
    subnet_id: str = ""
    security_group_ids: tuple[str, ...] = ()
    key_name: str = ""


@dataclass(frozen=True, slots=True)
class Instance:
    """What the registry needs to know of an EC2 instance."""

    instance_id: str
    status: worker_pb2.WorkerStatus  # the EC2 state as a worker status (UNSPECIFIED for a state EC2 added later)
    instance_type: str = ""
    ami_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    detailed_monitoring: bool = False
    state_reason: str = ""  # EC2's StateReason of the last state change, when it gives one
    root_device_type: worker_pb2.RootDeviceType = worker_pb2.ROOT_DEVICE_TYPE_UNSPECIFIED


class Ec2(Protocol):
    async def launch(self, spec: LaunchSpec) -> Instance: ...
    async def find_by_tag(self, region: str, key: str, value: str) -> Instance | None: ...
    async def describe(self, region: str, instance_id: str) -> Instance | None: ...
    async def start(self, region: str, instance_id: str) -> worker_pb2.WorkerStatus: ...
    async def stop(self, region: str, instance_id: str) -> worker_pb2.WorkerStatus: ...
    async def reboot(self, region: str, instance_id: str) -> None: ...
    async def terminate(self, region: str, instance_id: str) -> worker_pb2.WorkerStatus: ...


def _instance(raw: dict[str, Any]) -> Instance:
    return Instance(
        instance_id=raw["InstanceId"],
        status=worker_status(raw.get("State", {}).get("Name")),
        instance_type=raw.get("InstanceType", ""),
        ami_id=raw.get("ImageId", ""),
        tags={t["Key"]: t.get("Value", "") for t in raw.get("Tags", [])},
        detailed_monitoring=raw.get("Monitoring", {}).get("State") == "enabled",
        state_reason=_state_reason(raw.get("StateReason") or {}),
        root_device_type=_ROOT_DEVICE_TYPES.get(raw.get("RootDeviceType", ""),
                                                worker_pb2.ROOT_DEVICE_TYPE_UNSPECIFIED),
    )


def _state_reason(reason: dict[str, Any]) -> str:
    """EC2's Message usually starts with the Code ("Client.UserInitiatedShutdown: User initiated shutdown")."""
    code, message = str(reason.get("Code", "")), str(reason.get("Message", ""))
    if code and not message.startswith(code):
        return f"{code}: {message}" if message else code
    return message


def _wrap(exc: Exception, action: str) -> Exception:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
        message = str(exc.response.get("Error", {}).get("Message", ""))
        if code in _NOT_FOUND:
            return NotFound(f"EC2 does not know the instance ({code})")
        if code == "IncorrectInstanceState":
            return FailedPrecondition(f"EC2 refused {action}: {message}")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400))
        if code in _RETRYABLE or status >= 500:
            return Unavailable(f"EC2 {action} failed: {code}")
        return Ec2Error(code, message)
    return Unavailable(f"EC2 {action} failed: {exc!r}")


class AwsEc2:
    """Ec2 through aioboto3, one client per region (cmlmon_core.aws.AwsClients)."""

    def __init__(self, clients: ClientSource) -> None:
        self._clients = clients

    async def _call(self, region: str, action: str, **kwargs: Any) -> dict[str, Any]:
        try:
            client = await self._clients.get("ec2", region)
            result: dict[str, Any] = await getattr(client, action)(**kwargs)
            return result
        except (ClientError, BotoCoreError) as exc:
            raise _wrap(exc, action) from exc

    async def launch(self, spec: LaunchSpec) -> Instance:
        kwargs: dict[str, Any] = {
            "ImageId": spec.ami_id, "InstanceType": spec.instance_type, "MinCount": 1, "MaxCount": 1,
            "ClientToken": spec.client_token,
            "TagSpecifications": [{"ResourceType": "instance",
                                   "Tags": [{"Key": k, "Value": v} for k, v in sorted(spec.tags.items())]}],
        }
        if spec.subnet_id:
            kwargs["SubnetId"] = spec.subnet_id
        if spec.security_group_ids:
            kwargs["SecurityGroupIds"] = list(spec.security_group_ids)
        if spec.key_name:
            kwargs["KeyName"] = spec.key_name
        try:
            result = await self._call(spec.region, "run_instances", **kwargs)
        except Ec2Error as exc:
            field = _LAUNCH_FIELDS.get(exc.code.split(".")[0])
            if field is None:
                raise
            raise InvalidArgument(field, f"EC2 refused it ({exc})") from exc
        return _instance(result["Instances"][0])

    async def find_by_tag(self, region: str, key: str, value: str) -> Instance | None:
        result = await self._call(region, "describe_instances",
                                  Filters=[{"Name": f"tag:{key}", "Values": [value]}])
        found = [_instance(i) for r in result.get("Reservations", []) for i in r.get("Instances", [])]
        return found[0] if found else None

    async def describe(self, region: str, instance_id: str) -> Instance | None:
        try:
            result = await self._call(region, "describe_instances", InstanceIds=[instance_id])
        except NotFound:
            return None
        found = [_instance(i) for r in result.get("Reservations", []) for i in r.get("Instances", [])]
        return found[0] if found else None

    async def _state_change(self, region: str, action: str, key: str, instance_id: str
                            ) -> worker_pb2.WorkerStatus:
        """The instance's status after the call; UNSPECIFIED when EC2 does not say."""
        result = await self._call(region, action, InstanceIds=[instance_id])
        changes = result.get(key, [])
        return worker_status(changes[0]["CurrentState"]["Name"] if changes else None)

    async def start(self, region: str, instance_id: str) -> worker_pb2.WorkerStatus:
        return await self._state_change(region, "start_instances", "StartingInstances", instance_id)

    async def stop(self, region: str, instance_id: str) -> worker_pb2.WorkerStatus:
        return await self._state_change(region, "stop_instances", "StoppingInstances", instance_id)

    async def reboot(self, region: str, instance_id: str) -> None:
        await self._call(region, "reboot_instances", InstanceIds=[instance_id])

    async def terminate(self, region: str, instance_id: str) -> worker_pb2.WorkerStatus:
        return await self._state_change(region, "terminate_instances", "TerminatingInstances", instance_id)
