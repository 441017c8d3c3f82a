"""Fakes of the collector's ports for unit tests of its logic only; each implements its port (checked by mypy)
and honours the same contract as the real adapter."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cmlmon_core.aws import ClientSource
from collector.adapters.aws import InstanceStatusPort, MetricDataPort
from collector.adapters.schedules import ScheduleStore
from collector.domain.model import Target
from collector.errors import AwsError, InstancesNotFound


class FakeEc2(InstanceStatusPort):
    """Knows some instances; like AWS, one unknown id fails the whole call and the message names the unknown
    ids (or, with vague=True, names none of them)."""

    def __init__(self, states: dict[str, str], *, vague: bool = False, fail_regions: set[str] | None = None
                 ) -> None:
        self.states = states
        self.vague = vague
        self.fail_regions = fail_regions or set()
        self.calls: list[list[str]] = []

    async def describe_instance_status(self, region: str, instance_ids: Sequence[str]) -> list[dict[str, Any]]:
        self.calls.append(list(instance_ids))
        assert len(instance_ids) <= 100
        if region in self.fail_regions:
            raise AwsError("DescribeInstanceStatus", region, "RequestLimitExceeded", "slow down", retryable=True)
        unknown = [i for i in instance_ids if i not in self.states]
        if unknown:
            message = "Something is wrong" if self.vague else f"The instance IDs '{', '.join(unknown)}' do not exist"
            raise InstancesNotFound(region, message, instance_ids)
        return [{"InstanceId": i, "InstanceState": {"Name": self.states[i]},
                 "SystemStatus": {"Status": "ok" if self.states[i] == "running" else "not-applicable"},
                 "InstanceStatus": {"Status": "ok" if self.states[i] == "running" else "not-applicable"}}
                for i in instance_ids]


class FakeMetrics(MetricDataPort):
    """Answers GetMetricData from (namespace, metric, instance id) -> [(timestamp, value)]."""

    def __init__(self, data: dict[tuple[str, str, str], list[tuple[datetime, float]]] | None = None) -> None:
        self.data = data or {}
        self.calls: list[list[dict[str, Any]]] = []
        self.windows: list[tuple[datetime, datetime]] = []

    async def get_metric_data(self, region: str, queries: Sequence[dict[str, Any]], start: datetime,
                              end: datetime) -> list[dict[str, Any]]:
        assert len(queries) <= 500
        self.calls.append(list(queries))
        self.windows.append((start, end))
        out = []
        for q in queries:
            metric = q["MetricStat"]["Metric"]
            iid = next(d["Value"] for d in metric["Dimensions"] if d["Name"] == "InstanceId")
            points = [(t, v) for t, v in self.data.get((metric["Namespace"], metric["MetricName"], iid), [])
                      if start <= t < end]
            out.append({"Id": q["Id"], "Timestamps": [t for t, _ in points], "Values": [v for _, v in points]})
        return out


class FakeStore(ScheduleStore):
    """Schedules in a dict, with the ScheduleStore contract."""

    def __init__(self) -> None:
        self.schedules: dict[str, Target] = {}
        self.ticks: list[str] = []
        self.puts = 0

    async def get(self, worker_id: str) -> Target | None:
        return self.schedules.get(worker_id)

    async def put(self, target: Target) -> None:
        if target.interval_seconds < 1:
            raise ValueError("interval")
        self.puts += 1
        self.schedules[target.worker_id] = target

    async def tick_now(self, target: Target) -> None:
        self.ticks.append(target.worker_id)

    async def remove(self, worker_id: str) -> None:
        self.schedules.pop(worker_id, None)

    async def worker_ids(self) -> set[str]:
        return set(self.schedules)


class ScriptedClient:
    """Raises the scripted errors in turn, then answers."""

    def __init__(self, errors: list[Exception], pages: list[dict[str, Any]] | None = None) -> None:
        self.errors = errors
        self.pages = pages or [{"MetricDataResults": []}]
        self.calls: list[dict[str, Any]] = []

    async def describe_instance_status(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if self.errors:
            raise self.errors.pop(0)
        return {"InstanceStatuses": [{"InstanceId": i} for i in kwargs["InstanceIds"]]}

    async def get_metric_data(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if self.errors:
            raise self.errors.pop(0)
        return self.pages.pop(0)


class FakeClients(ClientSource):
    def __init__(self, client: ScriptedClient) -> None:
        self.client = client

    async def get(self, service: str, region: str) -> Any:
        return self.client
