from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from collector.adapters.aws import AwsPoller, RetryPolicy
from collector.errors import AwsError, InstancesNotFound
from tests.unit.collector.fakes import FakeClients, ScriptedClient


def client_error(code: str, status: int, message: str = "nope") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "DescribeInstanceStatus")


def poller(client: ScriptedClient, attempts: int = 5) -> tuple[AwsPoller, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return AwsPoller(FakeClients(client), RetryPolicy(max_attempts=attempts, base_seconds=0.1, cap_seconds=1.0), 4,
                     sleep=sleep), slept


@pytest.mark.parametrize("error", [client_error("RequestLimitExceeded", 503), client_error("Throttling", 400),
                                   client_error("InternalError", 500), client_error("Whatever", 502),
                                   EndpointConnectionError(endpoint_url="http://x")])
async def test_throttling_5xx_and_connection_errors_are_retried_with_backoff(error: Exception) -> None:
    client = ScriptedClient([error, error])
    aws, slept = poller(client)
    got = await aws.describe_instance_status("us-east-1", ["i-12345678"])
    assert got == [{"InstanceId": "i-12345678"}]
    assert len(client.calls) == 3
    assert client.calls[0]["IncludeAllInstances"] is True
    assert len(slept) == 2 and all(0 <= s <= 1.0 for s in slept)


async def test_retries_give_up_after_max_attempts() -> None:
    client = ScriptedClient([client_error("RequestLimitExceeded", 503)] * 10)
    aws, slept = poller(client, attempts=3)
    with pytest.raises(AwsError) as info:
        await aws.describe_instance_status("us-east-1", ["i-12345678"])
    assert info.value.retryable and info.value.code == "RequestLimitExceeded"
    assert len(client.calls) == 3 and len(slept) == 2


async def test_client_errors_are_not_retried() -> None:
    client = ScriptedClient([client_error("UnauthorizedOperation", 403)])
    aws, slept = poller(client)
    with pytest.raises(AwsError) as info:
        await aws.describe_instance_status("us-east-1", ["i-12345678"])
    assert not info.value.retryable and slept == []


async def test_not_found_becomes_instances_not_found_with_the_message() -> None:
    msg = "The instance ID 'i-12345678' does not exist"
    aws, _ = poller(ScriptedClient([client_error("InvalidInstanceID.NotFound", 400, msg)]))
    with pytest.raises(InstancesNotFound) as info:
        await aws.describe_instance_status("us-east-1", ["i-12345678"])
    assert info.value.message == msg


async def test_metric_data_pages_are_followed() -> None:
    now = datetime.now(UTC)
    pages: list[dict[str, Any]] = [
        {"MetricDataResults": [{"Id": "cpu0", "Values": [1.0], "Timestamps": [now]}], "NextToken": "t1"},
        {"MetricDataResults": [{"Id": "cpu0", "Values": [2.0], "Timestamps": [now]}]}]
    client = ScriptedClient([client_error("Throttling", 400)], pages)
    aws, _ = poller(client)
    got = await aws.get_metric_data("us-east-1", [{"Id": "cpu0"}], now - timedelta(minutes=5), now)
    assert [r["Values"] for r in got] == [[1.0], [2.0]]
    assert "NextToken" not in client.calls[1] and client.calls[2]["NextToken"] == "t1"


@pytest.mark.parametrize(("raw", "expected"), [
    ("2026-11-28T18:33:31Z", datetime(2026, 11, 28, 18, 33, 31, tzinfo=UTC)),
    ("2026-11-28T18:33:31.250Z", datetime(2026, 11, 28, 18, 33, 31, 250000, tzinfo=UTC)),
    ("2026-11-28T18:33:31+00:00", datetime(2026, 11, 28, 18, 33, 31, tzinfo=UTC)),
    ("2026-11-28T18:33:31", datetime(2026, 11, 28, 18, 33, 31, tzinfo=UTC)),
    ("1700000000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),  # not ISO: botocore's parser
])
def test_fast_timestamp_parses_what_aws_writes(raw: str, expected: datetime) -> None:
    from collector.adapters.aws import fast_timestamp

    assert fast_timestamp(raw) == expected
