from __future__ import annotations

import botocore.session
import pytest

from cml.monitor.v1 import worker_pb2
from cmlmon_core import status as mapping
from collector.domain import ec2_status

W = worker_pb2
STATES = {
    "pending": W.WORKER_STATUS_PENDING,
    "running": W.WORKER_STATUS_RUNNING,
    "stopping": W.WORKER_STATUS_STOPPING,
    "stopped": W.WORKER_STATUS_STOPPED,
    "shutting-down": W.WORKER_STATUS_SHUTTING_DOWN,
    "terminated": W.WORKER_STATUS_TERMINATED,
}
CHECKS = {
    "ok": W.STATUS_CHECK_OK,
    "impaired": W.STATUS_CHECK_IMPAIRED,
    "insufficient-data": W.STATUS_CHECK_INSUFFICIENT_DATA,
    "initializing": W.STATUS_CHECK_INITIALIZING,
    "not-applicable": W.STATUS_CHECK_NOT_APPLICABLE,
}


@pytest.mark.parametrize(("name", "status"), STATES.items())
def test_every_ec2_state_maps(name: str, status: worker_pb2.WorkerStatus) -> None:
    assert mapping.worker_status(name) == status
    assert mapping.worker_status(name.upper()) == status


@pytest.mark.parametrize(("value", "check"), CHECKS.items())
def test_every_status_check_value_maps(value: str, check: worker_pb2.StatusCheck) -> None:
    assert mapping.status_check(value) == check


@pytest.mark.parametrize("odd", [None, "", "rebooting", "hibernating?"])
def test_unknown_values_are_unspecified_not_errors(odd: str | None) -> None:
    assert mapping.worker_status(odd) == W.WORKER_STATUS_UNSPECIFIED
    assert mapping.status_check(odd) == W.STATUS_CHECK_UNSPECIFIED


def test_every_status_and_check_of_the_contract_is_reachable_from_ec2() -> None:
    # Against the generated descriptors: a value added to the proto enums without an EC2 word fails here.
    assert set(mapping.STATES.values()) == set(W.WorkerStatus.values()) - {W.WORKER_STATUS_UNSPECIFIED}
    assert set(mapping.CHECKS.values()) == set(W.StatusCheck.values()) - {W.STATUS_CHECK_UNSPECIFIED}


def test_labels_for_metrics_and_messages() -> None:
    assert mapping.status_label(W.WORKER_STATUS_SHUTTING_DOWN) == "shutting_down"
    assert mapping.check_label(W.STATUS_CHECK_NOT_APPLICABLE) == "not_applicable"
    # a number from a newer proto is labelled, not an error in a metrics scrape
    assert mapping.status_label(99) == "unknown_99"  # type: ignore[arg-type]


def ec2_enum(shape: str) -> list[str]:
    """The values EC2's API model (botocore's, as the collector's client uses it) documents for a field."""
    return list(botocore.session.get_session().get_service_model("ec2").shape_for(shape).enum)


def test_every_documented_ec2_value_maps_and_every_status_and_check_is_reached() -> None:
    # Every state and check value EC2 documents maps to a status or check, and every status and check is the
    # mapping of one of them: a value EC2 adds, or a status nobody maps to, fails here.
    states = ec2_enum("InstanceStateName")  # DescribeInstanceStatus InstanceState.Name
    checks = ec2_enum("SummaryStatus")  # SystemStatus.Status, InstanceStatus.Status
    assert {mapping.worker_status(name) for name in states} == set(W.WorkerStatus.values()) - {
        W.WORKER_STATUS_UNSPECIFIED}
    assert {mapping.status_check(value) for value in checks} == set(W.StatusCheck.values()) - {
        W.STATUS_CHECK_UNSPECIFIED}
    assert len({mapping.worker_status(name) for name in states}) == len(states)  # no two states merged


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("system", CHECKS)
@pytest.mark.parametrize("instance", CHECKS)
def test_status_item_combinations(state: str, system: str, instance: str) -> None:
    item = {"InstanceId": "i-0123456789abcdef0", "InstanceState": {"Code": 16, "Name": state},
            "SystemStatus": {"Status": system}, "InstanceStatus": {"Status": instance}}
    got = ec2_status.from_status_item(item)
    assert got.instance_id == "i-0123456789abcdef0"
    assert got.status == STATES[state] and got.ec2_state == state
    assert got.system_check == CHECKS[system] and got.instance_check == CHECKS[instance]
    assert not got.missing
    assert got.running is (state == "running")


def test_status_item_without_checks() -> None:
    got = ec2_status.from_status_item({"InstanceId": "i-12345678", "InstanceState": {"Name": "stopped"}})
    assert got.status == W.WORKER_STATUS_STOPPED
    assert got.system_check == W.STATUS_CHECK_UNSPECIFIED and got.instance_check == W.STATUS_CHECK_UNSPECIFIED


def test_missing_instance_counts_as_terminated() -> None:
    got = ec2_status.missing("i-12345678")
    assert got.missing and got.status == W.WORKER_STATUS_TERMINATED and got.ec2_state == "" and not got.running
