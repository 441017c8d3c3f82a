"""The collector's AWS clients (bodies encoded once, answers parsed by the compiled walk) get from moto exactly
what plain aioboto3 clients get, for the two calls the collector makes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aioboto3

from collector.domain import cloudwatch
from collector.domain.model import Monitoring, Target
from tests.integration.collector.conftest import collector_settings, ec2_client, launch, put_metrics
from tests.unit.collector.test_aws_parsing import typed

REGION = "ap-southeast-2"


def without_metadata(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reply.items() if k != "ResponseMetadata"}


async def test_both_calls_answer_as_with_plain_aioboto3_clients(aws_endpoint: str, nats_url: str) -> None:
    from collector.bootstrap import aws_clients

    running, stopped, quiet = launch(aws_endpoint, REGION, count=3)
    ec2_client(aws_endpoint, REGION).stop_instances(InstanceIds=[stopped])
    now = datetime.now(UTC).replace(microsecond=0)
    for minutes, cpu in ((2, 40.0), (1, 97.25)):
        put_metrics(aws_endpoint, REGION, running, cpu=cpu, memory=cpu / 2, at=now - timedelta(minutes=minutes),
                    network_bytes=(1e6, 2e5))
    targets = [Target(worker_id=f"w-{i}", region=REGION, instance_id=iid, interval_seconds=60,
                      monitoring=Monitoring.DETAILED) for i, iid in enumerate((running, quiet))]
    metric_request = {"MetricDataQueries": cloudwatch.queries(targets, cloudwatch.MetricOptions()),
                      "StartTime": now - timedelta(minutes=10), "EndTime": now, "ScanBy": "TimestampDescending"}
    status_request = {"InstanceIds": [running, stopped, quiet], "IncludeAllInstances": True}

    async with aws_clients(collector_settings(nats_url, aws_endpoint)) as clients:
        ours_cw, ours_ec2 = await clients.get("cloudwatch", REGION), await clients.get("ec2", REGION)
        ours = (await ours_cw.get_metric_data(**metric_request),
                await ours_ec2.describe_instance_status(**status_request))
    session = aioboto3.Session()
    async with session.client("cloudwatch", region_name=REGION, endpoint_url=aws_endpoint) as cw, \
            session.client("ec2", region_name=REGION, endpoint_url=aws_endpoint) as ec2:
        plain = (await cw.get_metric_data(**metric_request), await ec2.describe_instance_status(**status_request))

    for mine, theirs in zip(ours, plain, strict=True):
        assert typed(without_metadata(mine)) == typed(without_metadata(theirs))
        assert mine["ResponseMetadata"]["HTTPStatusCode"] == 200
    results = {r["Id"]: r for r in ours[0]["MetricDataResults"]}
    assert cloudwatch.newest_by_query(list(results.values()))["cpu0"] == 97.25  # moto saw the whole request
    assert results["cpu1"]["Values"] == []
    states = {s["InstanceId"]: s["InstanceState"]["Name"] for s in ours[1]["InstanceStatuses"]}
    assert states == {running: "running", stopped: "stopped", quiet: "running"}
