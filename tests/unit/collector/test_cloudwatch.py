from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cml.monitor.v1 import events_pb2, worker_pb2
from collector.codec import target_from_tick
from collector.domain import cloudwatch
from collector.domain.model import Monitoring, Target

NOW = datetime(2026, 11, 28, 12, 34, 56, 789000, tzinfo=UTC)


@pytest.mark.parametrize("mode", worker_pb2.MonitoringMode.values(), ids=worker_pb2.MonitoringMode.Name)
def test_period_follows_monitoring_and_is_a_multiple_of_60(mode: worker_pb2.MonitoringMode) -> None:
    # Every monitoring mode a tick can carry, as the tick consumer reads it: 1-minute data only with detailed
    # monitoring; basic and unknown ask for 5-minute periods (which also find 1-minute data).
    target = target_from_tick(events_pb2.PollTick(worker_id="w-1", region="us-east-1", instance_id="i-12345678",
                                                  monitoring_mode=mode))
    period = cloudwatch.period_for(target.monitoring)
    assert period > 0 and period % 60 == 0
    assert period == (60 if mode == worker_pb2.MONITORING_MODE_DETAILED else 300)


def test_window_ends_the_delay_before_now_and_spans_the_lookback() -> None:
    opts = cloudwatch.MetricOptions(delay_seconds=120, lookback_periods=3)
    win = cloudwatch.window(NOW, [60, 300], opts)
    assert win.end == NOW - timedelta(seconds=120)
    assert win.start.second == 0 and win.start.microsecond == 0
    assert win.end - win.start >= timedelta(seconds=900)
    assert win.end - win.start < timedelta(seconds=960)


def test_window_with_zero_delay_ends_now() -> None:
    win = cloudwatch.window(NOW, [60], cloudwatch.MetricOptions(delay_seconds=0, lookback_periods=5))
    assert win.end == NOW
    assert win.end - win.start >= timedelta(seconds=300)


def test_newest_datapoint_wins_whatever_the_order() -> None:
    t0 = NOW - timedelta(minutes=10)
    stamps = [t0 + timedelta(minutes=5), t0 + timedelta(minutes=10), t0]
    assert cloudwatch.newest(stamps, [50.0, 75.0, 10.0]) == 75.0


def test_no_datapoint_is_unknown_not_zero() -> None:
    assert cloudwatch.newest([], []) is None


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=10**6), st.floats(0, 100)), min_size=1,
                unique_by=lambda p: p[0]))
def test_newest_is_the_value_at_the_max_timestamp(points: list[tuple[int, float]]) -> None:
    stamps = [NOW + timedelta(seconds=s) for s, _ in points]
    expected = max(points)[1]
    assert cloudwatch.newest(stamps, [v for _, v in points]) == expected


def test_queries_name_cpu_memory_and_network_with_the_configured_dimension_set() -> None:
    t = Target(worker_id="w", region="us-east-1", instance_id="i-12345678", monitoring=Monitoring.DETAILED,
               instance_type="c5.metal", image_id="ami-12345678")
    opts = cloudwatch.MetricOptions(memory_dimensions=("InstanceId", "ImageId", "InstanceType"))
    cpu, mem, net_in, net_out = cloudwatch.queries([t], opts)
    assert cpu["Id"] == "cpu0" and mem["Id"] == "mem0"
    assert (net_in["Id"], net_out["Id"]) == ("netin0", "netout0")
    for q, name in ((net_in, "NetworkIn"), (net_out, "NetworkOut")):
        assert q["MetricStat"]["Metric"] == {"Namespace": "AWS/EC2", "MetricName": name,
                                             "Dimensions": [{"Name": "InstanceId", "Value": "i-12345678"}]}
        assert q["MetricStat"]["Stat"] == "Sum" and q["MetricStat"]["Period"] == 60
    assert cpu["MetricStat"]["Metric"] == {"Namespace": "AWS/EC2", "MetricName": "CPUUtilization",
                                           "Dimensions": [{"Name": "InstanceId", "Value": "i-12345678"}]}
    assert cpu["MetricStat"]["Period"] == 60 and mem["MetricStat"]["Period"] == 60
    assert mem["MetricStat"]["Metric"]["Namespace"] == "CWAgent"
    assert mem["MetricStat"]["Metric"]["MetricName"] == "mem_used_percent"
    assert mem["MetricStat"]["Metric"]["Dimensions"] == [
        {"Name": "InstanceId", "Value": "i-12345678"}, {"Name": "ImageId", "Value": "ami-12345678"},
        {"Name": "InstanceType", "Value": "c5.metal"}]


def test_memory_dimension_with_unknown_value_is_left_out() -> None:
    t = Target(worker_id="w", region="us-east-1", instance_id="i-12345678")
    assert cloudwatch.memory_dimensions(t, ("InstanceId", "ImageId")) == [
        {"Name": "InstanceId", "Value": "i-12345678"}]


def test_newest_by_query_merges_pages_and_drops_empty_ids() -> None:
    t = NOW
    results: list[dict[str, Any]] = [
        {"Id": "cpu0", "Timestamps": [t - timedelta(minutes=5)], "Values": [10.0]},
        {"Id": "mem0", "Timestamps": [], "Values": []},
        {"Id": "cpu0", "Timestamps": [t], "Values": [20.0]},
    ]
    assert cloudwatch.newest_by_query(results) == {"cpu0": 20.0}
