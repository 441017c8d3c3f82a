"""The query-protocol body the collector's AWS clients send is the one botocore's own preparer would send."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import botocore.session
from botocore.awsrequest import AWSRequest
from botocore.serialize import create_serializer

from collector.adapters.aws import encode_body_once, encode_form
from collector.domain import cloudwatch
from collector.domain.model import Monitoring, Target


def serialized(service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    request: dict[str, Any] = create_serializer(model.metadata["protocol"]).serialize_to_request(params, model)
    return request


def botocore_body(fields: dict[str, Any]) -> bytes:
    body: bytes = AWSRequest(method="POST", url="https://example.com/", data=fields).body
    return body


def metric_data_params() -> dict[str, Any]:
    targets = [Target(worker_id=f"w{i}", region="eu-west-1", instance_id=f"i-{i:017x}", interval_seconds=60,
                      monitoring=Monitoring.DETAILED if i % 2 else Monitoring.BASIC,
                      instance_type="c5.metal", image_id=f"ami-{i:08x}") for i in range(125)]
    opts = cloudwatch.MetricOptions(memory_namespace="CW Agent/é&x=1~", memory_dimensions=(
        "InstanceId", "ImageId", "InstanceType"))
    return {"MetricDataQueries": cloudwatch.queries(targets, opts), "ScanBy": "TimestampDescending",
            "StartTime": datetime(2026, 12, 3, 21, 0, tzinfo=UTC),
            "EndTime": datetime(2026, 12, 3, 21, 15, 7, tzinfo=UTC),
            "NextToken": "tok+en/with=odd&chars"}


def test_a_metric_data_body_is_byte_for_byte_botocores() -> None:
    fields = serialized("cloudwatch", "GetMetricData", metric_data_params())["body"]
    assert len(fields) > 4000
    assert encode_form(fields) == botocore_body(fields)


def test_an_instance_status_body_is_byte_for_byte_botocores() -> None:
    fields = serialized("ec2", "DescribeInstanceStatus", {
        "InstanceIds": [f"i-{i:017x}" for i in range(100)], "IncludeAllInstances": True})["body"]
    assert encode_form(fields) == botocore_body(fields)


def test_the_before_call_hook_leaves_a_body_botocore_sends_unchanged() -> None:
    fields = serialized("cloudwatch", "GetMetricData", metric_data_params())["body"]
    params: dict[str, Any] = {"body": dict(fields)}
    encode_body_once(params)
    assert params["body"] == botocore_body(fields)
    assert botocore_body(params["body"]) == params["body"]  # bytes go through botocore's preparer as they are


def test_a_body_with_other_values_is_left_to_botocore() -> None:
    params: dict[str, Any] = {"body": {"Action": "X", "Items": ["a", "b"]}}
    encode_body_once(params)
    assert params["body"] == {"Action": "X", "Items": ["a", "b"]}
