"""The query-protocol bodies the collector's AWS clients send are the ones botocore's own serializer and preparer
would send, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import botocore.session
from botocore.awsrequest import AWSRequest
from botocore.model import OperationModel
from botocore.serialize import create_serializer

from collector.adapters.aws_requests import FormRequests, encode_form
from collector.domain import cloudwatch
from collector.domain.model import Monitoring, Target


def operation(service: str, name: str) -> OperationModel:
    return botocore.session.get_session().get_service_model(service).operation_model(name)


def serialized(service: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    model = operation(service, name)
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
    queries = cloudwatch.queries(targets, opts)
    queries[0] = {**queries[0], "ReturnData": False, "Label": "a label"}
    queries[1] = {"Id": "sum", "Expression": "cpu0 + mem0", "Period": 300, "ReturnData": True}
    return {"MetricDataQueries": queries, "ScanBy": "TimestampDescending",
            "StartTime": datetime(2026, 12, 3, 21, 0, tzinfo=UTC),
            "EndTime": datetime(2026, 12, 3, 21, 15, 7, tzinfo=UTC),
            "NextToken": "tok+en/with=odd&chars"}


def through_the_handlers(service: str, name: str, params: dict[str, Any]) -> Any:
    """What botocore sends with the collector's two handlers in its pipeline (provide-client-params, serialize,
    before-call, prepare)."""
    handlers, model = FormRequests(), operation(service, name)
    context: dict[str, Any] = {}
    params = handlers.take_member(params=params, model=model, context=context) or params
    serializer = create_serializer(model.metadata["protocol"], include_validation=False)  # as CLIENT_CONFIG
    request: dict[str, Any] = serializer.serialize_to_request(params, model)
    handlers.encode_body(params=request, context=context)
    return request["body"]


def test_a_metric_data_body_is_byte_for_byte_botocores() -> None:
    fields = serialized("cloudwatch", "GetMetricData", metric_data_params())["body"]
    assert len(fields) > 3500
    assert encode_form(fields) == botocore_body(fields)
    assert through_the_handlers("cloudwatch", "GetMetricData", metric_data_params()) == botocore_body(fields)


def test_an_empty_query_list_is_sent_as_botocore_sends_it() -> None:
    params = {**metric_data_params(), "MetricDataQueries": []}
    expected = botocore_body(serialized("cloudwatch", "GetMetricData", params)["body"])
    assert through_the_handlers("cloudwatch", "GetMetricData", params) == expected


def test_an_instance_status_body_is_byte_for_byte_botocores() -> None:
    params = {"InstanceIds": [f"i-{i:017x}" for i in range(100)], "IncludeAllInstances": True}
    fields = serialized("ec2", "DescribeInstanceStatus", params)["body"]
    assert through_the_handlers("ec2", "DescribeInstanceStatus", params) == botocore_body(fields)


def test_with_client_side_validation_botocore_serializes_every_member() -> None:
    validating, quick = botocore.session.get_session(), botocore.session.get_session()
    FormRequests().register(validating, validating=True)
    FormRequests().register(quick, validating=False)
    event = "provide-client-params.cloudwatch.GetMetricData"
    kwargs: dict[str, Any] = {"params": metric_data_params(), "model": operation("cloudwatch", "GetMetricData")}
    assert validating.get_component("event_emitter").emit(event, context={}, **kwargs) == []
    ((_, taken),) = quick.get_component("event_emitter").emit(event, context={}, **kwargs)
    assert "MetricDataQueries" not in taken


def test_a_body_with_other_values_is_left_to_botocore() -> None:
    params: dict[str, Any] = {"body": {"Action": "X", "Items": ["a", "b"]}}
    FormRequests().encode_body(params=params, context={})
    assert params["body"] == {"Action": "X", "Items": ["a", "b"]}


def test_a_value_the_model_does_not_expect_is_left_to_botocore() -> None:
    params = metric_data_params()
    params["MetricDataQueries"][3] = {**params["MetricDataQueries"][3], "Id": ["not", "a", "string"]}
    context: dict[str, Any] = {}
    assert FormRequests().take_member(params=params, model=operation("cloudwatch", "GetMetricData"),
                                      context=context) is None
    assert context == {}
