"""CloudWatch done right: periods that are multiples of 60 from the monitoring mode, a query window that ends
a configurable delay before now, the dimension set the agent really writes, and the newest datapoint (a
GetMetricData result is not ordered the way the old design assumed), with no data meaning unknown.

Network traffic (AWS/EC2 NetworkIn, NetworkOut) is asked as the Sum over the period and turned into bytes per
second by dividing by the period: EC2 writes bytes per datapoint interval (1 or 5 minutes), so Sum / period is
right whichever monitoring the instance really has, where an Average would be off by five under a 300 s period
over 1-minute data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from collector.domain.model import Monitoring, Target

BASIC_PERIOD = 300
DETAILED_PERIOD = 60
CPU_NAMESPACE = "AWS/EC2"
CPU_METRIC = "CPUUtilization"
MEMORY_METRIC = "mem_used_percent"
NETWORK_IN_METRIC = "NetworkIn"
NETWORK_OUT_METRIC = "NetworkOut"


@dataclass(frozen=True, slots=True)
class MetricOptions:
    delay_seconds: int = 60
    lookback_periods: int = 3
    memory_namespace: str = "CWAgent"
    memory_dimensions: tuple[str, ...] = ("InstanceId",)


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime


def period_for(monitoring: Monitoring) -> int:
    """60 s for detailed monitoring; 300 s for basic, and when unknown (a 300 s period also finds
    1-minute data, a 60 s period would miss 5-minute data)."""
    return DETAILED_PERIOD if monitoring is Monitoring.DETAILED else BASIC_PERIOD


def window(now: datetime, periods: Sequence[int], opts: MetricOptions) -> Window:
    """The window ends `delay` before now; it starts `lookback_periods` of the longest period earlier, on a
    minute boundary (CloudWatch answers aligned start times fastest)."""
    end = now - timedelta(seconds=opts.delay_seconds)
    span = max(periods, default=BASIC_PERIOD) * opts.lookback_periods
    start = end - timedelta(seconds=span)
    start = start.replace(second=0, microsecond=0)
    return Window(start=start, end=end)


def cpu_query_id(index: int) -> str:
    return f"cpu{index}"


def memory_query_id(index: int) -> str:
    return f"mem{index}"


def network_in_query_id(index: int) -> str:
    return f"netin{index}"


def network_out_query_id(index: int) -> str:
    return f"netout{index}"


def memory_dimensions(target: Target, names: Sequence[str]) -> list[dict[str, str]]:
    """The agent's dimension set for this instance; a name whose value is unknown is left out."""
    values = {"InstanceId": target.instance_id, "ImageId": target.image_id, "InstanceType": target.instance_type}
    return [{"Name": n, "Value": values[n]} for n in names if values.get(n)]


def queries(targets: Sequence[Target], opts: MetricOptions) -> list[dict[str, Any]]:
    """Four MetricDataQueries per target (CPU, memory, network in and out), with ids derived from the target's
    index."""
    out: list[dict[str, Any]] = []
    for index, target in enumerate(targets):
        period = period_for(target.monitoring)
        instance = [{"Name": "InstanceId", "Value": target.instance_id}]
        out.append(_query(cpu_query_id(index), CPU_NAMESPACE, CPU_METRIC, instance, period))
        out.append(_query(memory_query_id(index), opts.memory_namespace, MEMORY_METRIC,
                          memory_dimensions(target, opts.memory_dimensions), period))
        out.append(_query(network_in_query_id(index), CPU_NAMESPACE, NETWORK_IN_METRIC, instance, period, "Sum"))
        out.append(_query(network_out_query_id(index), CPU_NAMESPACE, NETWORK_OUT_METRIC, instance, period, "Sum"))
    return out


def per_second(total: float | None, period: int) -> float | None:
    """A Sum over one period as a rate per second; None stays unknown."""
    return None if total is None else total / period


def _query(qid: str, namespace: str, name: str, dims: list[dict[str, str]], period: int,
           stat: str = "Average") -> dict[str, Any]:
    return {
        "Id": qid,
        "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dims},
            "Period": period,
            "Stat": stat,
        },
    }  # ReturnData is true when left out: one field fewer to serialize, encode and send, 500 times a call


def newest(timestamps: Sequence[datetime], values: Sequence[float]) -> float | None:
    """The value of the newest datapoint, whatever order they come in; None when there is none."""
    best: tuple[datetime, float] | None = None
    for ts, value in zip(timestamps, values, strict=False):
        if best is None or ts > best[0]:
            best = (ts, float(value))
    return None if best is None else best[1]


def newest_by_query(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Newest value per query id over MetricDataResults (pages of one query are merged); ids without data
    are absent."""
    best: dict[str, tuple[datetime, Any]] = {}
    for result in results:
        qid = str(result["Id"])
        current = best.get(qid)
        for ts, value in zip(result.get("Timestamps") or (), result.get("Values") or (), strict=False):
            if current is None or ts > current[0]:
                current = (ts, value)
        if current is not None:
            best[qid] = current
    return {qid: float(value) for qid, (_, value) in best.items()}
