"""Polling one region's share of a batch: batched DescribeInstanceStatus, then batched GetMetricData for the
running instances only, folded into one observation per target."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from collector.adapters.aws import InstanceStatusPort, MetricDataPort
from collector.domain import batching, cloudwatch, ec2_status
from collector.domain.model import InstanceState, Observation, Readings, Target
from collector.errors import InstancesNotFound

NO_READINGS = Readings()


class Poller(Protocol):
    async def poll(self, region: str, targets: Sequence[Target]) -> list[Observation]:
        """One observation per target, in order; raises CollectorError when the region cannot be asked."""
        ...


def utc_now() -> datetime:
    return datetime.now(UTC)


class RegionPoller:
    def __init__(self, ec2: InstanceStatusPort, metrics: MetricDataPort, opts: cloudwatch.MetricOptions,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self._ec2 = ec2
        self._metrics = metrics
        self._opts = opts
        self._clock = clock

    async def poll(self, region: str, targets: Sequence[Target]) -> list[Observation]:
        """One observation per target, in order. Raises AwsError when the region cannot be asked."""
        good, malformed = batching.split_malformed(t.instance_id for t in targets)
        states = {iid: ec2_status.missing(iid) for iid in malformed}
        states.update(await self.describe(region, good))
        running = _unique_running(targets, states)
        values = await self.metrics(region, running) if running else {}
        out = []
        for t in targets:
            state = states[t.instance_id]
            r = values.get(t.instance_id, NO_READINGS) if state.running else NO_READINGS
            out.append(Observation(target=t, state=state, cpu=r.cpu, memory=r.memory, network_in=r.network_in,
                                   network_out=r.network_out))
        return out

    async def describe(self, region: str, instance_ids: Sequence[str]) -> dict[str, InstanceState]:
        states: dict[str, InstanceState] = {}
        await asyncio.gather(*(self._describe_chunk(region, list(chunk), states)
                               for chunk in batching.describe_plan(instance_ids)))
        return states

    async def _describe_chunk(self, region: str, ids: list[str], out: dict[str, InstanceState]) -> None:
        """Describe ids; unknown ids are reported missing and the rest asked again (split in halves when
        the error does not say which ids it means)."""
        remaining = ids
        while remaining:
            try:
                items = await self._ec2.describe_instance_status(region, remaining)
            except InstancesNotFound as exc:
                gone = batching.ids_named_in_error(exc.message, remaining)
                if not gone and len(remaining) == 1:
                    gone = set(remaining)
                if not gone:
                    half = len(remaining) // 2
                    await asyncio.gather(self._describe_chunk(region, remaining[:half], out),
                                         self._describe_chunk(region, remaining[half:], out))
                    return
                out.update({iid: ec2_status.missing(iid) for iid in gone})
                remaining = [iid for iid in remaining if iid not in gone]
                continue
            for item in items:
                state = ec2_status.from_status_item(item)
                out[state.instance_id] = state
            for iid in remaining:
                if iid not in out:
                    out[iid] = ec2_status.missing(iid)
            return

    async def metrics(self, region: str, targets: Sequence[Target]) -> dict[str, Readings]:
        """Readings per instance id; None where CloudWatch has no datapoint in the window."""
        periods = [cloudwatch.period_for(t.monitoring) for t in targets]
        win = cloudwatch.window(self._clock(), periods, self._opts)
        plans = batching.metric_plan(targets)
        answers = await asyncio.gather(*(
            self._metrics.get_metric_data(region, cloudwatch.queries(plan, self._opts), win.start, win.end)
            for plan in plans))
        out: dict[str, Readings] = {}
        for plan, results in zip(plans, answers, strict=True):
            newest = cloudwatch.newest_by_query(results)
            for index, t in enumerate(plan):
                period = cloudwatch.period_for(t.monitoring)
                out[t.instance_id] = Readings(
                    cpu=newest.get(cloudwatch.cpu_query_id(index)),
                    memory=newest.get(cloudwatch.memory_query_id(index)),
                    network_in=cloudwatch.per_second(newest.get(cloudwatch.network_in_query_id(index)), period),
                    network_out=cloudwatch.per_second(newest.get(cloudwatch.network_out_query_id(index)), period))
        return out


def _unique_running(targets: Sequence[Target], states: dict[str, InstanceState]) -> list[Target]:
    seen: dict[str, Target] = {}
    for t in targets:
        if states[t.instance_id].running and t.instance_id not in seen:
            seen[t.instance_id] = t
    return list(seen.values())
