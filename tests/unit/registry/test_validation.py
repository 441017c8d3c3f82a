from __future__ import annotations

from typing import Any

import pytest

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import worker_pb2
from registry.domain import validation
from registry.domain.paging import PageTokens
from registry.errors import InvalidArgument

GOOD = {"request_id": "r-1", "name": "worker-1", "region": "us-east-1", "instance_type": "c5.metal",
        "ami_id": "ami-0123456789abcdef0"}


def create(**changes: Any) -> rs.CreateWorkerRequest:
    return rs.CreateWorkerRequest(**{**GOOD, **changes})


def field_of(call: Any, *args: Any) -> str:
    with pytest.raises(InvalidArgument) as refused:
        call(*args)
    return refused.value.field


def test_good_create_passes() -> None:
    validation.create(create(subnet_id="subnet-12345678", security_group_ids=["sg-0123456789abcdef0"],
                             key_name="ops key", tags={"team": "lab", "cost center": "42"}, poll_interval_seconds=60))


@pytest.mark.parametrize(("changes", "field"), [
    ({"request_id": ""}, "request_id"),
    ({"request_id": "has space"}, "request_id"),
    ({"name": ""}, "name"),
    ({"name": "a" * 65}, "name"),
    ({"name": "bad/name"}, "name"),
    ({"region": "useast1"}, "region"),
    ({"region": "US-EAST-1"}, "region"),
    ({"instance_type": "metal"}, "instance_type"),
    ({"ami_id": "ami-123"}, "ami_id"),
    ({"ami_id": "ami-0123456789ABCDEF0"}, "ami_id"),
    ({"subnet_id": "subnet-zz"}, "subnet_id"),
    ({"security_group_ids": ["sg-1"]}, "security_group_ids"),
    ({"key_name": "\x00"}, "key_name"),
    ({"poll_interval_seconds": 86_401}, "poll_interval_seconds"),
])
def test_bad_create_fields_are_named(changes: dict[str, Any], field: str) -> None:
    assert field_of(validation.create, create(**changes)) == field


@pytest.mark.parametrize("tags", [{"aws:x": "1"}, {"cmlmon:worker-id": "w"}, {"": "v"}, {"k": "\x00"},
                                  {f"k{i}": "v" for i in range(41)}])
def test_bad_tags_are_refused(tags: dict[str, str]) -> None:
    assert field_of(validation.create, create(tags=tags)).startswith("tags")


def test_the_autopilot_tags_are_the_reserved_keys_people_may_set() -> None:
    validation.create(create(tags={"cmlmon:autostop": "never", "cmlmon:offhours": "off"}))
    assert validation.importable_tags({"cmlmon:autostop": "never", "cmlmon:worker-id": "w"}) == {
        "cmlmon:autostop": "never"}


@pytest.mark.parametrize(("instance_id", "ok"), [
    ("i-12345678", True), ("i-0123456789abcdef0", True), ("i-123", False), ("i-0123456789abcdef", False),
    ("i-0123456789ABCDEF0", False), ("0123456789abcdef0", False), ("", False),
])
def test_instance_id_is_i_and_8_or_17_hex(instance_id: str, ok: bool) -> None:
    request = rs.ImportWorkerRequest(region="eu-west-1", instance_id=instance_id)
    if ok:
        validation.import_(request)
    else:
        assert field_of(validation.import_, request) == "instance_id"


def test_list_page_size_defaults_and_bounds() -> None:
    assert validation.list_(rs.ListWorkersRequest()) == 50
    assert validation.list_(rs.ListWorkersRequest(page_size=5000)) == 1000
    assert field_of(validation.list_, rs.ListWorkersRequest(page_size=-1)) == "page_size"
    unspecified = rs.ListWorkersRequest(statuses=[worker_pb2.WORKER_STATUS_UNSPECIFIED])
    assert field_of(validation.list_, unspecified) == "statuses"
    assert field_of(validation.list_, rs.ListWorkersRequest(statuses=[77])) == "statuses"  # type: ignore[list-item]
    assert field_of(validation.list_, rs.ListWorkersRequest(region="x")) == "region"


def test_ids_and_etags() -> None:
    assert field_of(validation.change, "W-UPPER", "") == "id"
    assert field_of(validation.change, "w-1", "abc") == "etag"
    validation.change("w-1", "42")


def test_names_from_ec2_are_made_valid() -> None:
    assert validation.sanitize_name("CML worker #3", "i-1") == "CML-worker-3"
    assert validation.sanitize_name("###", "i-1") == "i-1"
    assert validation.importable_tags({"Name": "x", "aws:cloudformation": "y", "team": "lab"}) == {"team": "lab"}


def test_page_tokens_round_trip_and_refuse_forgery_and_other_filters() -> None:
    tokens = PageTokens(b"k" * 32)
    request = rs.ListWorkersRequest(region="us-east-1", page_size=10)
    token = tokens.issue("w-abc", request)
    assert tokens.read(token, rs.ListWorkersRequest(region="us-east-1", page_size=99, page_token=token)) == "w-abc"
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), "", "%%%", "a" * 300):
        with pytest.raises(InvalidArgument):
            tokens.read(bad, request)
    with pytest.raises(InvalidArgument):
        tokens.read(token, rs.ListWorkersRequest(region="eu-west-1"))
    with pytest.raises(InvalidArgument):
        PageTokens(b"other-key").read(token, request)
    peer = PageTokens(b"k" * 32)  # another replica's: verifies the token once, then remembers it
    for _ in range(2):
        assert peer.read(token, request) == "w-abc"
        with pytest.raises(InvalidArgument):
            peer.read(token, rs.ListWorkersRequest(region="eu-west-1"))
    assert peer.issue("w-abc", request) == token  # the same page of the same filter, the same token


@pytest.mark.parametrize(("seconds", "nanos", "text", "field"), [
    (None, 0, "", "controller.probe_time"),  # no probe time
    (253_402_300_800, 0, "", "controller.probe_time"),  # after 9999-12-31
    (1_700_000_000, -1, "", "controller.probe_time"),
    (1_700_000_000, 0, "x" * 2049, "controller.version"),
])
def test_a_controller_report_needs_a_valid_probe_time_and_bounded_text(
        seconds: int | None, nanos: int, text: str, field: str) -> None:
    req = rs.SetWorkerControllerRequest(id="w-1", controller=worker_pb2.CmlController(version=text))
    if seconds is not None:
        req.controller.probe_time.seconds = seconds
        req.controller.probe_time.nanos = nanos
    with pytest.raises(InvalidArgument) as info:
        validation.set_controller(req)
    assert info.value.field == field
    ok = rs.SetWorkerControllerRequest(id="w-1", controller=worker_pb2.CmlController(reachable=False))
    ok.controller.probe_time.seconds = 1_700_000_000
    validation.set_controller(ok)
