"""The table columns of workers, alerts and silences. Times are shown relative to now ("3m ago")."""

from __future__ import annotations

import time
from collections.abc import Mapping

from rich.text import Text

from cml.monitor.v1 import alert_pb2, events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_cli.formatting import ago, percent, short_name, utc_time
from cmlmon_cli.output import Column

_STATUS_STYLE: dict[int, str] = {
    worker_pb2.WORKER_STATUS_RUNNING: "green",
    worker_pb2.WORKER_STATUS_PENDING: "yellow",
    worker_pb2.WORKER_STATUS_STOPPING: "yellow",
    worker_pb2.WORKER_STATUS_STOPPED: "blue",
    worker_pb2.WORKER_STATUS_SHUTTING_DOWN: "red",
    worker_pb2.WORKER_STATUS_TERMINATED: "dim",
}
_SEVERITY_STYLE: dict[int, str] = {
    alert_pb2.ALERT_SEVERITY_CRITICAL: "bold red",
    alert_pb2.ALERT_SEVERITY_WARNING: "yellow",
    alert_pb2.ALERT_SEVERITY_INFO: "cyan",
}


def status_text(status: int) -> Text:
    return Text(short_name(worker_pb2.WorkerStatus, status), style=_STATUS_STYLE.get(status, ""))


def severity_text(severity: int) -> Text:
    return Text(short_name(alert_pb2.AlertSeverity, severity), style=_SEVERITY_STYLE.get(severity, ""))


def _cpu(w: worker_pb2.Worker) -> str:
    return percent(w.cpu_utilization if w.HasField("cpu_utilization") else None)


def _mem(w: worker_pb2.Worker) -> str:
    return percent(w.memory_utilization if w.HasField("memory_utilization") else None)


def _checks(w: worker_pb2.Worker | events_pb2.MetricSample) -> str:
    return (f"{short_name(worker_pb2.StatusCheck, w.system_status_check)}/"
            f"{short_name(worker_pb2.StatusCheck, w.instance_status_check)}")


def _tags(tags: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items())) or "-"


def controller_summary(w: worker_pb2.Worker) -> str:
    """What the last probe of the worker's CML controller found, in one cell; "-" when none was recorded."""
    if not w.HasField("controller"):
        return "-"
    c = w.controller
    if not c.reachable:
        return "unreachable"
    health = "health ?" if not c.HasField("healthy") else "healthy" if c.healthy else "unhealthy"
    labs = f"{c.labs} labs" if c.HasField("labs") else "labs ?"
    nodes = f"{c.running_nodes} nodes running" if c.HasField("running_nodes") else "nodes ?"
    return f"{c.version or 'version ?'} {health}, licence {c.licence_authorization or '?'}, {labs}, {nodes}"


def worker_columns(controller_in_table: bool = False) -> list[Column]:
    """The worker table; the CML controller's figures only with -o wide unless controller_in_table (one worker)."""
    return [
        Column("ID", lambda w: w.id, priority=10),
        Column("NAME", lambda w: w.name, priority=9),
        Column("REGION", lambda w: w.region, priority=7),
        Column("STATUS", lambda w: status_text(w.status), priority=9),
        Column("CPU", _cpu, priority=6, justify="right"),
        Column("MEM", _mem, priority=6, justify="right"),
        Column("LAST SEEN", lambda w: ago(w.last_seen_time, time.time()), priority=5),
        Column("REQUESTED", lambda w: short_name(worker_pb2.WorkerStatus, w.requested_status), priority=4,
               wide_only=True),
        Column("INSTANCE", lambda w: w.instance_id, priority=4, wide_only=True),
        Column("TYPE", lambda w: w.instance_type, priority=3, wide_only=True),
        Column("CHECKS", _checks, priority=3, wide_only=True),
        Column("POLL", lambda w: f"{w.poll_interval_seconds}s" if w.poll_interval_seconds else "-", priority=2,
               wide_only=True),
        Column("ORIGIN", lambda w: short_name(worker_pb2.WorkerOrigin, w.origin), priority=1, wide_only=True),
        Column("TAGS", lambda w: _tags(w.tags), priority=1, wide_only=True),
        Column("CML", controller_summary, priority=3, wide_only=not controller_in_table),
        Column("AGE", lambda w: ago(w.create_time, time.time()).removesuffix(" ago"), priority=4),
    ]


def sample_columns() -> list[Column]:
    """A worker's metric history, one row per sample (`workers metrics` without --step)."""
    def cpu(s: events_pb2.MetricSample) -> str:
        return percent(s.cpu_utilization if s.HasField("cpu_utilization") else None)

    def mem(s: events_pb2.MetricSample) -> str:
        return percent(s.memory_utilization if s.HasField("memory_utilization") else None)

    return [
        Column("TIME (UTC)", lambda s: utc_time(s.observe_time), priority=10),
        Column("STATUS", lambda s: status_text(s.status), priority=8),
        Column("CPU", cpu, priority=9, justify="right"),
        Column("MEM", mem, priority=9, justify="right"),
        Column("EC2 STATE", lambda s: s.ec2_state or "-", priority=3, wide_only=True),
        Column("CHECKS", _checks, priority=3, wide_only=True),
        Column("COLLECTOR", lambda s: s.collector_id or "-", priority=1, wide_only=True),
    ]


def _summary(field: str, name: str) -> Column:
    """MIN/AVG/MAX of one metric of a bucket, "-" when no sample of the step had a value."""

    def text(b: rs.MetricBucket) -> str:
        if not b.HasField(field):
            return "-"
        m: rs.MetricSummary = getattr(b, field)
        return f"{m.min:.1f} / {m.avg:.1f} / {m.max:.1f}"

    return Column(f"{name} MIN/AVG/MAX %", text, priority=9, justify="right")


def bucket_columns() -> list[Column]:
    """A worker's metric history summarised per step (`workers metrics --step`)."""
    return [
        Column("START (UTC)", lambda b: utc_time(b.start_time), priority=10),
        Column("SAMPLES", lambda b: str(b.sample_count), priority=7, justify="right"),
        _summary("cpu_utilization", "CPU"),
        _summary("memory_utilization", "MEM"),
        Column("STATUS", lambda b: status_text(b.status), priority=8),
    ]


def alert_columns() -> list[Column]:
    def value(a: alert_pb2.Alert) -> str:
        if not a.HasField("value"):
            return "-"
        limit = f" / {a.threshold:g}" if a.HasField("threshold") else ""
        return f"{a.value:.1f}{limit}"

    return [
        Column("WORKER", lambda a: a.worker_name or a.worker_id, priority=10),
        Column("RULE", lambda a: a.rule, priority=10),
        Column("SEVERITY", lambda a: severity_text(a.severity), priority=8),
        Column("STATE", lambda a: short_name(alert_pb2.AlertState, a.state), priority=7),
        Column("VALUE", value, priority=5, justify="right"),
        Column("SINCE", lambda a: ago(a.start_time, time.time()), priority=6),
        Column("SILENCED", lambda a: "yes" if a.silenced else "no", priority=4),
        Column("ENDED", lambda a: ago(a.end_time, time.time()), priority=3, wide_only=True),
        Column("WORKER ID", lambda a: a.worker_id, priority=3, wide_only=True),
        Column("INSTANCE", lambda a: a.instance_id, priority=2, wide_only=True),
        Column("REGION", lambda a: a.region, priority=2, wide_only=True),
        Column("SUMMARY", lambda a: a.summary, priority=1, wide_only=True),
    ]


def silence_columns() -> list[Column]:
    return [
        Column("ID", lambda s: s.id, priority=10),
        Column("WORKER", lambda s: s.worker_id or "*", priority=9),
        Column("RULE", lambda s: s.rule or "*", priority=9),
        Column("ENDS", lambda s: ago(s.end_time, time.time()), priority=8),
        Column("CREATED BY", lambda s: s.created_by or "-", priority=4),
        Column("CREATED", lambda s: ago(s.create_time, time.time()), priority=3, wide_only=True),
        Column("COMMENT", lambda s: s.comment or "-", priority=5),
    ]
