from __future__ import annotations

import pytest
from botocore.exceptions import EndpointConnectionError

from cml.monitor.v1 import worker_pb2
from cmlmon_core.settings import load_settings
from registry.adapters.ec2 import AwsEc2, LaunchSpec, _instance, _wrap
from registry.adapters.mongo import hosts_of
from registry.errors import Ec2Error, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from registry.settings import RegistrySettings
from tests.unit.registry.fakes import RefusingClients, client_error


@pytest.mark.parametrize(("error", "kind"), [
    (client_error("InvalidInstanceID.NotFound"), NotFound),
    (client_error("InvalidInstanceID.Malformed"), NotFound),
    (client_error("IncorrectInstanceState"), FailedPrecondition),
    (client_error("RequestLimitExceeded"), Unavailable),
    (client_error("Whatever", 503), Unavailable),
    (client_error("UnauthorizedOperation", 403), Ec2Error),
    (EndpointConnectionError(endpoint_url="http://x"), Unavailable),
])
def test_ec2_errors_are_translated(error: Exception, kind: type[Exception]) -> None:
    assert isinstance(_wrap(error, "op"), kind)


@pytest.mark.parametrize(("raw", "root"), [("ebs", worker_pb2.ROOT_DEVICE_TYPE_EBS),
                                           ("instance-store", worker_pb2.ROOT_DEVICE_TYPE_INSTANCE_STORE),
                                           (None, worker_pb2.ROOT_DEVICE_TYPE_UNSPECIFIED),
                                           ("a-later-kind", worker_pb2.ROOT_DEVICE_TYPE_UNSPECIFIED)])
def test_the_root_device_type_is_read_from_ec2(raw: str | None, root: worker_pb2.RootDeviceType) -> None:
    described = {"InstanceId": "i-0123456789abcdef0", "State": {"Name": "running"}}
    if raw is not None:
        described["RootDeviceType"] = raw
    assert _instance(described).root_device_type == root


@pytest.mark.parametrize(("code", "field"), [("InvalidAMIID.NotFound", "ami_id"),
                                             ("InvalidSubnetID.NotFound", "subnet_id"),
                                             ("InvalidGroup.NotFound", "security_group_ids"),
                                             ("InvalidKeyPair.NotFound", "key_name")])
async def test_launch_refusals_name_the_field(code: str, field: str) -> None:
    ec2 = AwsEc2(RefusingClients(code))
    with pytest.raises(InvalidArgument) as refused:
        await ec2.launch(LaunchSpec("us-east-1", "t3.micro", "ami-12345678", "tok", {}))
    assert refused.value.field == field


def test_settings_defaults_and_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRPC_PORT", "METRICS_PORT", "NATS_URL", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    defaults = RegistrySettings()
    assert (defaults.grpc_port, defaults.metrics_port, defaults.registry_missing_grace_seconds) == (50051, 9101, 300)
    monkeypatch.setenv("GRPC_PORT", "6000")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    configured = RegistrySettings()
    assert configured.grpc_port == 6000 and configured.aws_endpoint_url == "http://127.0.0.1:4566"


def test_mongodb_store_needs_a_uri_and_never_echoes_it(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WORKER_STORE", "mongodb")
    monkeypatch.delenv("MONGODB_URI", raising=False)
    with pytest.raises(SystemExit):
        load_settings(RegistrySettings)
    assert "MONGODB_URI: Value error, required when WORKER_STORE=mongodb" in capsys.readouterr().err
    monkeypatch.setenv("MONGODB_URI", "http://admin:hunter2@db:27017")
    with pytest.raises(SystemExit):
        load_settings(RegistrySettings)
    err = capsys.readouterr().err
    assert "MONGODB_URI" in err and "hunter2" not in err
    monkeypatch.setenv("MONGODB_URI", "mongodb://admin:hunter2@db1:27017,db2:27017/?replicaSet=rs0")
    settings = load_settings(RegistrySettings)
    assert "hunter2" not in repr(settings) and settings.worker_store == "mongodb"
    assert hosts_of(settings.mongodb_uri.get_secret_value()) == "db1:27017,db2:27017"


def test_the_kv_store_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKER_STORE", raising=False)
    monkeypatch.delenv("MONGODB_URI", raising=False)
    assert RegistrySettings().worker_store == "kv"
