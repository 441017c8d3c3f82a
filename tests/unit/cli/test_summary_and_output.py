"""`cmlmon status`'s conclusions, and the shape of the JSON and table outputs, from messages made here."""

from __future__ import annotations

import json

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cml.monitor.v1 import alert_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_cli.output import Column, Format, build_table, console, print_messages, to_dict
from cmlmon_cli.summary import staleness, summarize
from cmlmon_cli.views import controller_summary, worker_columns

NOW = 1_700_000_000


def worker(wid: str, status: worker_pb2.WorkerStatus = worker_pb2.WORKER_STATUS_RUNNING,
           seen_ago: int | None = None, created_ago: int = 3600, interval: int = 60,
           region: str = "us-east-1") -> worker_pb2.Worker:
    w = worker_pb2.Worker(id=wid, name=f"n-{wid}", region=region, status=status, poll_interval_seconds=interval,
                          create_time=Timestamp(seconds=NOW - created_ago))
    if seen_ago is not None:
        w.last_seen_time.CopyFrom(Timestamp(seconds=NOW - seen_ago))
    return w


def test_staleness_oldest_sample_never_seen_and_stale() -> None:
    workers = [
        worker("fresh", seen_ago=30),
        worker("old", seen_ago=170),  # under 3 intervals of 60 s
        worker("stale", seen_ago=181),
        worker("new", created_ago=100),  # never observed, but recorded only 100 s ago
        worker("lost", created_ago=1000),  # never observed in 1000 s
        worker("gone", status=worker_pb2.WORKER_STATUS_TERMINATED, seen_ago=99_999),
        worker("slow", seen_ago=3000, interval=0),  # the service default (300 s) applies
    ]
    s = staleness(workers, NOW)
    assert (s.oldest_id, s.oldest_name, s.oldest_age) == ("slow", "n-slow", 3000)
    assert s.never_seen == 2 and s.stale == ["stale", "lost", "slow"]
    assert staleness([worker("new", created_ago=10)], NOW).oldest_age is None


def test_summary_counts_by_status_region_and_severity() -> None:
    workers = [worker("a", seen_ago=1), worker("b", worker_pb2.WORKER_STATUS_STOPPED, seen_ago=1),
               worker("c", seen_ago=1, region="eu-west-1")]
    alerts = [alert_pb2.Alert(state=alert_pb2.ALERT_STATE_FIRING, severity=alert_pb2.ALERT_SEVERITY_CRITICAL),
              alert_pb2.Alert(state=alert_pb2.ALERT_STATE_FIRING, severity=alert_pb2.ALERT_SEVERITY_WARNING,
                              silenced=True),
              alert_pb2.Alert(state=alert_pb2.ALERT_STATE_RESOLVED, severity=alert_pb2.ALERT_SEVERITY_CRITICAL)]
    s = summarize(workers, alerts, NOW)
    assert s.total == 3 and s.by_status == {"RUNNING": 2, "STOPPED": 1}
    assert s.by_region == {"eu-west-1": {"RUNNING": 1}, "us-east-1": {"RUNNING": 1, "STOPPED": 1}}
    assert (s.firing, s.by_severity, s.silenced) == (2, {"CRITICAL": 1, "WARNING": 1}, 1)


def test_json_is_proto_field_names_in_declaration_order_with_zero_values() -> None:
    response = rs.WatchWorkersResponse(worker=worker_pb2.Worker(id="w", tags={"b": "2", "a": "1"},
                                                                cpu_utilization=0.0))
    doc = to_dict(response)
    assert list(doc) == ["worker", "initial", "event_type"] and doc["initial"] is False
    assert list(doc["worker"])[:6] == ["id", "name", "region", "instance_id", "instance_type", "status"]
    assert doc["worker"]["status"] == "WORKER_STATUS_UNSPECIFIED" and doc["worker"]["cpu_utilization"] == 0.0
    assert "memory_utilization" not in doc["worker"]  # optional and unset: absent, as the proto JSON mapping says
    assert doc["worker"]["tags"] == {"b": "2", "a": "1"}


def test_a_list_is_one_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    print_messages("workers", [worker("a"), worker("b")], [], Format.json)
    assert [w["id"] for w in json.loads(capsys.readouterr().out)["workers"]] == ["a", "b"]


def test_narrow_table_drops_low_priority_columns_and_wide_adds_its_own() -> None:
    columns = [Column("ID", lambda w: w.id, priority=10), Column("NAME", lambda w: w.name, priority=9),
               Column("REGION", lambda w: w.region, priority=2),
               Column("INSTANCE", lambda w: w.instance_id, priority=4, wide_only=True)]
    rows = [worker_pb2.Worker(id="w-1", name="[red]x", region="us-east-1", instance_id="i-1")]

    def headers(fmt: Format, width: int | None) -> list[str]:
        return [str(c.header) for c in build_table(columns, rows, fmt, width).columns]

    assert headers(Format.table, None) == ["ID", "NAME", "REGION"]
    assert headers(Format.wide, None) == ["ID", "NAME", "REGION", "INSTANCE"]
    assert headers(Format.wide, 24) == ["ID", "NAME", "INSTANCE"]
    out = console()
    with out.capture() as captured:
        out.print(build_table(columns, rows, Format.table, None))
    assert "[red]x" in captured.get(), "cells are data, never rich markup"


def test_the_controller_cell_says_what_the_last_probe_found() -> None:
    w = worker("w")
    assert controller_summary(w) == "-"  # no controller, or never probed
    w.controller.CopyFrom(worker_pb2.CmlController(reachable=False, error="ConnectError"))
    assert controller_summary(w) == "unreachable"
    w.controller.CopyFrom(worker_pb2.CmlController(reachable=True, version="2.8.1", healthy=False, labs=2,
                                                   running_nodes=0, licence_authorization="OUT_OF_COMPLIANCE"))
    assert controller_summary(w) == "2.8.1 unhealthy, licence OUT_OF_COMPLIANCE, 2 labs, 0 nodes running"
    w.controller.ClearField("healthy")
    w.controller.ClearField("labs")
    assert controller_summary(w) == "2.8.1 health ?, licence OUT_OF_COMPLIANCE, labs ?, 0 nodes running"


def test_one_worker_shows_its_controller_and_a_list_only_wide() -> None:
    def headers(columns: list[Column], fmt: Format) -> list[str]:
        return [str(c.header) for c in build_table(columns, [worker("w")], fmt, None).columns]

    assert "CML" in headers(worker_columns(controller_in_table=True), Format.table)
    assert "CML" not in headers(worker_columns(), Format.table)
    assert "CML" in headers(worker_columns(), Format.wide)
