"""The compiled walk makes of GetMetricData and DescribeInstanceStatus answers exactly what botocore's parsers make
(every field of the model, not only those the collector reads); everything else is left to botocore."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from aiobotocore.parsers import AioResponseParserFactory

from collector.adapters.aws import fast_timestamp
from collector.adapters.aws_parsing import CollectorParserFactory

METRIC_DATA = b"""<GetMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">
  <GetMetricDataResult>
    <MetricDataResults>
      <member>
        <Id>cpu0</Id><Label>CPUUtilization</Label><StatusCode>Complete</StatusCode>
        <Timestamps><member>2026-12-03T21:05:00Z</member><member>2026-12-03T21:00:00.250Z</member></Timestamps>
        <Values><member>96.8</member><member>1.5E1</member></Values>
        <Messages/>
      </member>
      <member>
        <Id>mem0</Id><Label></Label><StatusCode>PartialData</StatusCode>
        <Timestamps/><Values/>
        <Messages><member><Code>MaxDatapointsExceeded</Code><Value>some &amp; more</Value></member></Messages>
      </member>
    </MetricDataResults>
    <NextToken>abc+/=</NextToken>
    <Messages><member><Code>Warn</Code><Value>v</Value></member></Messages>
  </GetMetricDataResult>
  <ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata>
</GetMetricDataResponse>"""

INSTANCE_STATUS = b"""<DescribeInstanceStatusResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>req-2</requestId>
  <instanceStatusSet>
    <item>
      <instanceId>i-0123456789abcdef0</instanceId><availabilityZone>eu-west-1a</availabilityZone>
      <operator><managed>false</managed></operator>
      <eventsSet><item><instanceEventId>instance-event-1</instanceEventId><code>system-reboot</code>
        <description>reboot</description><notBefore>2026-12-10T00:00:00.000Z</notBefore></item></eventsSet>
      <instanceState><code>16</code><name>running</name></instanceState>
      <systemStatus><status>impaired</status><details><item><name>reachability</name><status>failed</status>
        <impairedSince>2026-12-03T20:00:00.000Z</impairedSince></item></details></systemStatus>
      <instanceStatus><status>ok</status><details><item><name>reachability</name><status>passed</status></item>
        </details></instanceStatus>
      <attachedEbsStatus><status>ok</status></attachedEbsStatus>
      <unknownField>ignored</unknownField>
    </item>
    <item>
      <instanceId>i-89abcdef</instanceId><availabilityZone>eu-west-1b</availabilityZone>
      <operator><managed>true</managed><principal>elasticloadbalancing.amazonaws.com</principal></operator>
      <instanceState><code>80</code><name>stopped</name></instanceState>
      <systemStatus><status>not-applicable</status></systemStatus>
      <instanceStatus><status>not-applicable</status></instanceStatus>
    </item>
  </instanceStatusSet>
  <nextToken/>
</DescribeInstanceStatusResponse>"""


def typed(value: Any) -> Any:
    """value with every scalar's type beside it (16 == 16.0, but botocore gives an int)."""
    if isinstance(value, dict):
        return sorted((k, typed(v)) for k, v in value.items())
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def parse(factory: Any, service: str, operation: str, body: bytes, status: int = 200) -> Any:
    model = botocore.session.get_session().get_service_model(service)
    factory.set_parser_defaults(timestamp_parser=fast_timestamp)
    parser = factory.create_parser(model.metadata["protocol"])
    return parser._do_parse({"body": body, "headers": {}, "status_code": status, "context": {}},
                            model.operation_model(operation).output_shape)


@pytest.mark.parametrize(("service", "operation", "body"), [
    ("cloudwatch", "GetMetricData", METRIC_DATA), ("ec2", "DescribeInstanceStatus", INSTANCE_STATUS)])
def test_an_answer_is_parsed_as_botocore_parses_it(service: str, operation: str, body: bytes) -> None:
    ours = parse(CollectorParserFactory(), service, operation, body)
    assert typed(ours) == typed(parse(AioResponseParserFactory(), service, operation, body))
    assert ours["ResponseMetadata"]["RequestId"].startswith("req-")


def test_the_fields_the_collector_reads_come_out_typed() -> None:
    data = parse(CollectorParserFactory(), "cloudwatch", "GetMetricData", METRIC_DATA)
    first = data["MetricDataResults"][0]
    assert first["Values"] == [96.8, 15.0]
    assert first["Timestamps"][0] > first["Timestamps"][1]
    assert data["NextToken"] == "abc+/="
    status = parse(CollectorParserFactory(), "ec2", "DescribeInstanceStatus", INSTANCE_STATUS)["InstanceStatuses"]
    assert [(s["InstanceId"], s["InstanceState"]["Name"], s["InstanceState"]["Code"], s["SystemStatus"]["Status"])
            for s in status] == [("i-0123456789abcdef0", "running", 16, "impaired"),
                                 ("i-89abcdef", "stopped", 80, "not-applicable")]


def test_other_operations_are_botocores() -> None:
    body = (b'<GetMetricStatisticsResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">'
            b"<GetMetricStatisticsResult><Label>x</Label><Datapoints><member><Average>1.5</Average>"
            b"<Timestamp>2026-12-03T21:05:00Z</Timestamp></member></Datapoints></GetMetricStatisticsResult>"
            b"</GetMetricStatisticsResponse>")
    ours = parse(CollectorParserFactory(), "cloudwatch", "GetMetricStatistics", body)
    assert typed(ours) == typed(parse(AioResponseParserFactory(), "cloudwatch", "GetMetricStatistics", body))
    assert ours["Datapoints"][0]["Average"] == 1.5
