from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from cml.monitor.v1 import worker_pb2 as W
from collector.domain.cloudwatch import MetricOptions
from collector.domain.model import Monitoring, Target
from collector.errors import AwsError
from collector.service.poll import RegionPoller
from tests.unit.collector.fakes import FakeEc2, FakeMetrics

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
OPTS = MetricOptions(delay_seconds=60, lookback_periods=3)


def iid(n: int) -> str:
    return f"i-{n:08x}"


def targets(n: int, region: str = "us-east-1") -> list[Target]:
    return [Target(worker_id=f"w{i}", region=region, instance_id=iid(i)) for i in range(n)]


def poller(ec2: FakeEc2, metrics: FakeMetrics | None = None) -> RegionPoller:
    return RegionPoller(ec2, metrics or FakeMetrics(), OPTS, clock=lambda: NOW)


async def test_thousand_running_workers_cost_18_calls_and_get_their_own_values() -> None:
    ts = targets(1000)
    data = {("AWS/EC2", "CPUUtilization", t.instance_id): [(NOW - timedelta(minutes=5), float(i % 100))]
            for i, t in enumerate(ts)}
    ec2, cw = FakeEc2({t.instance_id: "running" for t in ts}), FakeMetrics(data)
    out = await poller(ec2, cw).poll("us-east-1", ts)
    assert len(ec2.calls) + len(cw.calls) == 18  # 10 DescribeInstanceStatus + 8 GetMetricData
    assert [o.target for o in out] == ts
    assert all(o.cpu == float(i % 100) for i, o in enumerate(out))
    assert all(o.memory is None and o.network_in is None for o in out)  # no data: unknown, not 0


async def test_cloudwatch_is_not_asked_about_instances_that_are_not_running() -> None:
    ts = targets(3)
    ec2 = FakeEc2({iid(0): "running", iid(1): "stopped", iid(2): "pending"})
    cw = FakeMetrics()
    out = await poller(ec2, cw).poll("us-east-1", ts)
    asked = {d["Value"] for q in cw.calls[0] for d in q["MetricStat"]["Metric"]["Dimensions"]}
    assert asked == {iid(0)}
    assert [o.state.status for o in out] == [W.WORKER_STATUS_RUNNING, W.WORKER_STATUS_STOPPED,
                                              W.WORKER_STATUS_PENDING]
    assert out[1].state.system_check == W.STATUS_CHECK_NOT_APPLICABLE


async def test_no_running_instance_means_no_cloudwatch_call() -> None:
    cw = FakeMetrics()
    await poller(FakeEc2({iid(0): "stopped"}), cw).poll("us-east-1", targets(1))
    assert cw.calls == []


@pytest.mark.parametrize("vague", [False, True])
async def test_unknown_id_is_reported_for_that_worker_only(vague: bool) -> None:
    ts = targets(250)
    known = {t.instance_id: "running" for t in ts if t.instance_id not in (iid(7), iid(180))}
    out = await poller(FakeEc2(known, vague=vague)).poll("us-east-1", ts)
    missing = {o.target.instance_id for o in out if o.state.missing}
    assert missing == {iid(7), iid(180)}
    assert all(o.state.status == W.WORKER_STATUS_TERMINATED for o in out if o.state.missing)
    assert all(o.state.status == W.WORKER_STATUS_RUNNING for o in out if not o.state.missing)


async def test_malformed_id_is_reported_without_asking_ec2() -> None:
    ts = [*targets(2), Target(worker_id="bad", region="us-east-1", instance_id="not-an-id")]
    ec2 = FakeEc2({iid(0): "running", iid(1): "running"})
    out = await poller(ec2).poll("us-east-1", ts)
    assert [o.state.missing for o in out] == [False, False, True]
    assert all("not-an-id" not in call for call in ec2.calls)


async def test_newest_datapoint_in_the_window_is_used() -> None:
    t = targets(1)[0]
    points = [(NOW - timedelta(minutes=14), 10.0), (NOW - timedelta(minutes=6), 30.0),
              (NOW - timedelta(minutes=11), 20.0), (NOW - timedelta(seconds=30), 99.0)]  # last: inside the delay
    cw = FakeMetrics({("AWS/EC2", "CPUUtilization", t.instance_id): points,
                      ("CWAgent", "mem_used_percent", t.instance_id): [(NOW - timedelta(minutes=2), 55.0)]})
    (obs,) = await poller(FakeEc2({t.instance_id: "running"}), cw).poll("us-east-1", [t])
    assert obs.cpu == 30.0
    assert obs.memory == 55.0
    _start, end = cw.windows[0]
    assert end == NOW - timedelta(seconds=60)


async def test_network_traffic_is_the_newest_period_sum_in_bytes_per_second() -> None:
    basic, detailed = targets(2)
    detailed = replace(detailed, monitoring=Monitoring.DETAILED)
    cw = FakeMetrics({("AWS/EC2", "NetworkIn", basic.instance_id): [(NOW - timedelta(minutes=7), 600_000.0),
                                                                   (NOW - timedelta(minutes=2), 3_000.0)],
                      ("AWS/EC2", "NetworkOut", basic.instance_id): [(NOW - timedelta(minutes=2), 1_500.0)],
                      ("AWS/EC2", "NetworkIn", detailed.instance_id): [(NOW - timedelta(minutes=2), 6_000.0)]})
    ec2 = FakeEc2({basic.instance_id: "running", detailed.instance_id: "running"})
    out = await poller(ec2, cw).poll("us-east-1", [basic, detailed])
    assert (out[0].network_in, out[0].network_out) == (10.0, 5.0)  # 300 s periods
    assert (out[1].network_in, out[1].network_out) == (100.0, None)  # a 60 s period; no NetworkOut: unknown
    stats = {q["MetricStat"]["Metric"]["MetricName"]: q["MetricStat"]["Stat"] for q in cw.calls[0]}
    assert stats["NetworkIn"] == stats["NetworkOut"] == "Sum"


async def test_duplicate_targets_of_one_instance_are_asked_once() -> None:
    t = targets(1)[0]
    ec2, cw = FakeEc2({t.instance_id: "running"}), FakeMetrics()
    out = await poller(ec2, cw).poll("us-east-1", [t, t])
    assert len(out) == 2
    assert ec2.calls == [[t.instance_id]]
    assert len(cw.calls[0]) == 4


async def test_a_failing_region_raises_for_the_caller_to_nak() -> None:
    with pytest.raises(AwsError):
        await poller(FakeEc2({}, fail_regions={"eu-west-1"})).poll("eu-west-1", targets(3, "eu-west-1"))
