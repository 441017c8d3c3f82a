"""EC2 DescribeInstanceStatus and CloudWatch GetMetricData through aioboto3, behind two small ports.

Retries are ours, not botocore's (its clients are built with one attempt): throttling, 5xx and connection
errors are retried with capped exponential backoff and jitter, counted per region. Concurrency is bounded
per region, so a slow or failing region queues only its own calls."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import aioboto3
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError
from botocore.parsers import DEFAULT_TIMESTAMP_PARSER as _botocore_timestamp

from cmlmon_core.aws import ClientSource
from collector import telemetry
from collector.adapters.aws_parsing import CollectorParserFactory
from collector.adapters.aws_requests import FormRequests
from collector.domain.backoff import backoff_delay
from collector.errors import AwsError, InstancesNotFound

log = logging.getLogger(__name__)
R = TypeVar("R")

RETRYABLE_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "TooManyRequestsException", "ServiceUnavailable", "ServiceUnavailableException", "Unavailable",
    "InternalError", "InternalFailure", "InternalServiceError", "RequestTimeout", "RequestTimeoutException",
})


def fast_timestamp(value: Any) -> datetime:
    """botocore's timestamp parser goes through dateutil (~40 us a value: a GetMetricData answer for 250
    instances carries ~1,500 of them); ISO 8601 as AWS writes it is parsed by the standard library, anything
    else still by botocore."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    fallback: datetime = _botocore_timestamp(value)
    return fallback


def collector_session(config: Config) -> aioboto3.Session:
    """An aioboto3 session whose clients parse GetMetricData and DescribeInstanceStatus answers with a compiled
    walk (aws_parsing) and timestamps with fast_timestamp, and build query-protocol bodies cheaply
    (aws_requests) for clients built with `config`."""
    core = get_session()
    core.register_component("response_parser_factory", CollectorParserFactory())
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=fast_timestamp)
    FormRequests().register(core, validating=config.parameter_validation)
    return aioboto3.Session(botocore_session=core)


# One attempt per call (the collector retries itself, counting each retry; botocore's max_attempts counts
# retries, so max_attempts=1 let it retry a throttled call once unseen), and no client-side validation of the
# parameters we build ourselves (it costs ~1 ms per 500-query GetMetricData call and AWS validates them anyway).
CLIENT_CONFIG = Config(retries={"total_max_attempts": 1, "mode": "standard"}, parameter_validation=False)


class InstanceStatusPort(Protocol):
    async def describe_instance_status(self, region: str, instance_ids: Sequence[str]) -> list[dict[str, Any]]:
        """`InstanceStatuses` for these ids (IncludeAllInstances); InstancesNotFound names unknown ids."""
        ...


class MetricDataPort(Protocol):
    async def get_metric_data(self, region: str, queries: Sequence[dict[str, Any]], start: datetime,
                              end: datetime) -> list[dict[str, Any]]:
        """`MetricDataResults` of every page."""
        ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_seconds: float = 0.2
    cap_seconds: float = 5.0


class AwsPoller:
    """Both ports over one set of per-region aioboto3 clients."""

    def __init__(self, clients: ClientSource, retry: RetryPolicy, region_concurrency: int,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._clients = clients
        self._retry = retry
        self._concurrency = region_concurrency
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._sleep = sleep

    async def describe_instance_status(self, region: str, instance_ids: Sequence[str]) -> list[dict[str, Any]]:
        async def call() -> list[dict[str, Any]]:
            ec2 = await self._clients.get("ec2", region)
            reply = await ec2.describe_instance_status(InstanceIds=list(instance_ids), IncludeAllInstances=True)
            return list(reply.get("InstanceStatuses", []))

        try:
            return await self._with_retries("DescribeInstanceStatus", region, call)
        except AwsError as exc:
            if exc.code in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
                raise InstancesNotFound(region, exc.message, instance_ids) from exc
            raise

    async def get_metric_data(self, region: str, queries: Sequence[dict[str, Any]], start: datetime,
                              end: datetime) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        request: dict[str, Any] = {"MetricDataQueries": list(queries), "StartTime": start, "EndTime": end,
                                   "ScanBy": "TimestampDescending"}
        while True:
            reply = await self._with_retries("GetMetricData", region, functools.partial(self._metric_page, region,
                                                                                     dict(request)))
            results.extend(reply.get("MetricDataResults", []))
            token = reply.get("NextToken")
            if not token:
                return results
            request["NextToken"] = token

    async def _metric_page(self, region: str, request: dict[str, Any]) -> dict[str, Any]:
        cw = await self._clients.get("cloudwatch", region)
        reply: dict[str, Any] = await cw.get_metric_data(**request)
        return reply

    def _limit(self, region: str) -> asyncio.Semaphore:
        if region not in self._limits:
            self._limits[region] = asyncio.Semaphore(self._concurrency)
        return self._limits[region]

    async def _with_retries(self, action: str, region: str, call: Callable[[], Awaitable[R]]) -> R:
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._limit(region):
                    result = await call()
            except (ClientError, BotoCoreError) as exc:
                error = _wrap(action, region, exc)
                telemetry.AWS_CALLS.labels(action, region, error.code).inc()
                if not error.retryable or attempt >= self._retry.max_attempts:
                    raise error from exc
                telemetry.AWS_RETRIES.labels(action, region, error.code).inc()
                delay = backoff_delay(attempt, self._retry.base_seconds, self._retry.cap_seconds)
                log.info("aws call retried", extra={"action": action, "region": region, "code": error.code,
                                                    "attempt": attempt, "delay": round(delay, 3)})
                await self._sleep(delay)
                continue
            telemetry.AWS_CALLS.labels(action, region, "ok").inc()
            return result


def _wrap(action: str, region: str, exc: ClientError | BotoCoreError) -> AwsError:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code") or "Unknown")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        retryable = code in RETRYABLE_CODES or status >= 500 or status == 429
        return AwsError(action, region, code, str(err.get("Message") or ""), retryable=retryable)
    retryable = isinstance(exc, ConnectionError | HTTPClientError)
    return AwsError(action, region, type(exc).__name__, str(exc), retryable=retryable)
