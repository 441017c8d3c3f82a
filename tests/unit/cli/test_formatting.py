"""The command line's pure text rules: durations both ways, tags, enum names, columns that fit."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cml.monitor.v1 import alert_pb2, worker_pb2
from cmlmon_cli.formatting import (
    ColumnFit,
    ago,
    fit_columns,
    human_duration,
    parse_duration,
    parse_enum,
    parse_tags,
    parse_time,
    short_name,
    short_names,
    utc_time,
)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (-5, "0s"), (59.9, "59s"), (60, "1m"), (61, "1m1s"), (599, "9m59s"), (600, "10m"), (3599, "59m"),
    (3600, "1h"), (3660, "1h1m"), (9 * 3600 + 59 * 60, "9h59m"), (10 * 3600 + 60, "10h"), (86_399, "23h"),
    (86_400, "1d"), (90_000, "1d1h"), (10 * 86_400 + 3600, "10d"), (400 * 86_400, "400d"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_ago_past_future_and_unset() -> None:
    now = 1_700_000_000.0
    assert ago(Timestamp(seconds=int(now) - 180), now) == "3m ago"
    assert ago(Timestamp(seconds=int(now) + 7200), now) == "in 2h"
    assert ago(Timestamp(seconds=int(now)), now) == "0s ago"
    assert ago(Timestamp(), now) == "-"


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86_400), ("1h30m", 5400), ("300", 300), ("1.5h", 5400),
    (" 2H ", 7200),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "2x", "1h 30m", "0s", "0", "-5m", "2h30", "m5"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "seconds"), [
    ("2026-12-02T15:00:00Z", 1_796_223_600), ("2026-12-02T16:00+01:00", 1_796_223_600),
    ("2026-12-02 15:00", 1_796_223_600), ("2026-12-02", 1_796_169_600), (" 2026-12-02T15:00:00.5Z ", 1_796_223_600.5),
])
def test_parse_time_is_utc_unless_an_offset_is_given(text: str, seconds: float) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["", "yesterday", "1h", "2026-13-01", "2026-12-02T25:00"])
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a time"):
        parse_time(text)


def test_utc_time() -> None:
    assert utc_time(Timestamp(seconds=1_796_223_605, nanos=900_000_000)) == "2026-12-02T15:00:05Z"
    assert utc_time(Timestamp()) == "-"


def test_parse_tags() -> None:
    assert parse_tags(["team=lab", "env=", "k=v=w"]) == {"team": "lab", "env": "", "k": "v=w"}
    for bad in ("team", "=lab"):
        with pytest.raises(ValueError, match=bad):
            parse_tags([bad])


def test_enum_names_both_ways() -> None:
    assert short_name(worker_pb2.WorkerStatus, worker_pb2.WORKER_STATUS_SHUTTING_DOWN) == "SHUTTING_DOWN"
    assert short_name(alert_pb2.AlertSeverity, alert_pb2.ALERT_SEVERITY_CRITICAL) == "CRITICAL"
    assert short_name(worker_pb2.WorkerStatus, 0) == "-"
    assert short_name(worker_pb2.WorkerStatus, 99) == "99"  # a newer server's value
    assert parse_enum(worker_pb2.WorkerStatus, "running") == worker_pb2.WORKER_STATUS_RUNNING
    assert parse_enum(worker_pb2.WorkerStatus, "shutting-down") == worker_pb2.WORKER_STATUS_SHUTTING_DOWN
    assert parse_enum(worker_pb2.WorkerStatus, "WORKER_STATUS_STOPPED") == worker_pb2.WORKER_STATUS_STOPPED
    for bad in ("unspecified", "sleeping", ""):
        with pytest.raises(ValueError, match="pending, running"):
            parse_enum(worker_pb2.WorkerStatus, bad)
    assert short_names(worker_pb2.WorkerStatus) == ["pending", "running", "stopping", "stopped", "shutting_down",
                                                    "terminated"]


def test_columns_fit_by_dropping_the_least_useful_first() -> None:
    cols = [ColumnFit(10, 10), ColumnFit(8, 9), ColumnFit(6, 2), ColumnFit(6, 5), ColumnFit(6, 2)]
    assert fit_columns(cols, 200) == [0, 1, 2, 3, 4]
    assert fit_columns(cols, 10 + 8 + 6 * 3 + 2 * 4) == [0, 1, 2, 3, 4]  # exactly wide enough
    assert fit_columns(cols, 10 + 8 + 6 * 3 + 2 * 4 - 1) == [0, 1, 2, 3]  # the rightmost of the lowest goes
    assert fit_columns(cols, 10 + 8 + 6 + 2 * 2) == [0, 1, 3]
    assert fit_columns(cols, 5) == [0], "the row's identity stays even when nothing fits"
    assert fit_columns([], 10) == []
