from __future__ import annotations

import botocore.session
import pytest

from collector.domain import ec2_status
from collector.domain.model import Check, Status

STATES = {
    "pending": Status.PENDING,
    "running": Status.RUNNING,
    "stopping": Status.STOPPING,
    "stopped": Status.STOPPED,
    "shutting-down": Status.SHUTTING_DOWN,
    "terminated": Status.TERMINATED,
}
CHECKS = {
    "ok": Check.OK,
    "impaired": Check.IMPAIRED,
    "insufficient-data": Check.INSUFFICIENT_DATA,
    "initializing": Check.INITIALIZING,
    "not-applicable": Check.NOT_APPLICABLE,
}


@pytest.mark.parametrize(("name", "status"), STATES.items())
def test_every_ec2_state_maps(name: str, status: Status) -> None:
    assert ec2_status.map_state(name) is status
    assert ec2_status.map_state(name.upper()) is status


@pytest.mark.parametrize(("value", "check"), CHECKS.items())
def test_every_status_check_value_maps(value: str, check: Check) -> None:
    assert ec2_status.map_check(value) is check


@pytest.mark.parametrize("odd", [None, "", "rebooting", "hibernating?"])
def test_unknown_values_are_unspecified_not_errors(odd: str | None) -> None:
    assert ec2_status.map_state(odd) is Status.UNSPECIFIED
    assert ec2_status.map_check(odd) is Check.UNSPECIFIED


def ec2_enum(shape: str) -> list[str]:
    """The values EC2's API model (botocore's, as the collector's client uses it) documents for a field."""
    return list(botocore.session.get_session().get_service_model("ec2").shape_for(shape).enum)


def test_every_domain_status_and_check_is_reachable() -> None:
    # Every state and check value EC2 documents maps to a status or check, and every status and check is the
    # mapping of one of them: a value EC2 adds, or a status nobody maps to, fails here.
    states = ec2_enum("InstanceStateName")  # DescribeInstanceStatus InstanceState.Name
    checks = ec2_enum("SummaryStatus")  # SystemStatus.Status, InstanceStatus.Status
    assert {ec2_status.map_state(name) for name in states} == set(Status) - {Status.UNSPECIFIED}
    assert {ec2_status.map_check(value) for value in checks} == set(Check) - {Check.UNSPECIFIED}
    assert len({ec2_status.map_state(name) for name in states}) == len(states)  # no two states merged


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("system", CHECKS)
@pytest.mark.parametrize("instance", CHECKS)
def test_status_item_combinations(state: str, system: str, instance: str) -> None:
    item = {"InstanceId": "i-0123456789abcdef0", "InstanceState": {"Code": 16, "Name": state},
            "SystemStatus": {"Status": system}, "InstanceStatus": {"Status": instance}}
    got = ec2_status.from_status_item(item)
    assert got.instance_id == "i-0123456789abcdef0"
    assert got.status is STATES[state] and got.ec2_state == state
    assert got.system_check is CHECKS[system] and got.instance_check is CHECKS[instance]
    assert not got.missing
    assert got.running is (state == "running")


def test_status_item_without_checks() -> None:
    got = ec2_status.from_status_item({"InstanceId": "i-12345678", "InstanceState": {"Name": "stopped"}})
    assert got.status is Status.STOPPED
    assert got.system_check is Check.UNSPECIFIED and got.instance_check is Check.UNSPECIFIED


def test_missing_instance_counts_as_terminated() -> None:
    got = ec2_status.missing("i-12345678")
    assert got.missing and got.status is Status.TERMINATED and got.ec2_state == "" and not got.running
