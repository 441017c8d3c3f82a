"""`cmlmon workers metrics`: the window and step options become the request (or a usage error before any call),
every page is followed, and the samples or buckets print as a table or one document. The registry here is a
gRPC server on loopback that pages a fixed history, so the paging is seen from the requests it receives."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner

from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import registry_service_pb2_grpc as rs_grpc
from cmlmon_cli.main import app
from cmlmon_dev.servers import free_port

START = 1_796_223_600  # 2026-12-02T15:00:00Z
RUNNING = worker_pb2.WORKER_STATUS_RUNNING


def bucket(i: int, memory: bool = True) -> rs.MetricBucket:
    b = rs.MetricBucket(sample_count=2, status=RUNNING,
                        cpu_utilization=rs.MetricSummary(min=i, avg=i + 0.5, max=i + 1))
    b.start_time.FromSeconds(START + 300 * i)
    if memory:
        b.memory_utilization.CopyFrom(rs.MetricSummary(min=50, avg=55.25, max=60))
    return b


class PagedHistory(rs_grpc.WorkerRegistryServiceServicer):
    """Answers GetWorkerMetrics with the history of worker w-1 two items a page; keeps every request."""

    def __init__(self) -> None:
        self.requests: list[rs.GetWorkerMetricsRequest] = []
        self.buckets = [bucket(0), bucket(1, memory=False), bucket(2), bucket(3), bucket(4)]
        self.samples = [events_pb2.MetricSample(worker_id="w-1", status=RUNNING, cpu_utilization=10.0 * i)
                        for i in range(3)]
        for i, s in enumerate(self.samples):
            s.observe_time.FromSeconds(START + 60 * i)

    def GetWorkerMetrics(self, request: rs.GetWorkerMetricsRequest, context: Any) -> rs.GetWorkerMetricsResponse:
        self.requests.append(rs.GetWorkerMetricsRequest().FromString(request.SerializeToString()))
        if request.worker_id != "w-1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"worker {request.worker_id} not found")
        offset = int(request.page_token or 0)
        items: list[Any] = self.buckets if request.HasField("step") else self.samples
        page = items[offset:offset + 2]
        token = str(offset + 2) if offset + 2 < len(items) else ""
        if request.HasField("step"):
            return rs.GetWorkerMetricsResponse(buckets=page, next_page_token=token)
        return rs.GetWorkerMetricsResponse(samples=page, next_page_token=token)


@pytest.fixture
def registry() -> Iterator[tuple[str, PagedHistory]]:
    history = PagedHistory()  # type: ignore[abstract]  # the RPCs it does not define answer UNIMPLEMENTED
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rs_grpc.add_WorkerRegistryServiceServicer_to_server(history, server)  # type: ignore[no-untyped-call]
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    server.start()
    try:
        yield address, history
    finally:
        server.stop(None)


def run(address: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["--registry", address, "workers", "metrics", *args],
                              env={"COLUMNS": "200", "CMLMON_TOKEN": ""})


def test_with_a_step_every_page_is_followed_and_printed_as_one_document(registry: tuple[str, PagedHistory]
                                                                         ) -> None:
    address, history = registry
    before = time.time()
    result = run(address, "w-1", "--since", "2h", "--step", "5m", "-o", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc) == ["buckets"]
    assert [b["start_time"] for b in doc["buckets"]] == [
        "2026-12-02T15:00:00Z", "2026-12-02T15:05:00Z", "2026-12-02T15:10:00Z", "2026-12-02T15:15:00Z",
        "2026-12-02T15:20:00Z"]
    assert doc["buckets"][0]["cpu_utilization"] == {"min": 0.0, "avg": 0.5, "max": 1.0}
    assert "memory_utilization" not in doc["buckets"][1]

    assert [r.page_token for r in history.requests] == ["", "2", "4"]
    first = history.requests[0]
    assert all(r.start_time == first.start_time and r.step.seconds == 300 for r in history.requests)
    assert before - 7200 - 1 <= first.start_time.seconds <= time.time() - 7200
    assert not first.HasField("end_time")  # now


def test_samples_table_and_an_explicit_window(registry: tuple[str, PagedHistory]) -> None:
    address, history = registry
    result = run(address, "w-1", "--start", "2026-12-02T15:00:00Z", "--end", "2026-12-02 16:00")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "STATUS", "CPU", "MEM"]
    assert [line.split() for line in lines[1:]] == [
        ["2026-12-02T15:00:00Z", "RUNNING", "0.0%", "-"], ["2026-12-02T15:01:00Z", "RUNNING", "10.0%", "-"],
        ["2026-12-02T15:02:00Z", "RUNNING", "20.0%", "-"]]
    assert (history.requests[0].start_time.seconds, history.requests[0].end_time.seconds) == (START, START + 3600)
    assert not history.requests[0].HasField("step")


def test_buckets_table_shows_min_avg_max(registry: tuple[str, PagedHistory]) -> None:
    address, _ = registry
    result = run(address, "w-1", "--step", "5m")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "CPU MIN/AVG/MAX %" in lines[0] and "SAMPLES" in lines[0]
    assert lines[1].split() == ["2026-12-02T15:00:00Z", "2", "0.0", "/", "0.5", "/", "1.0", "50.0", "/", "55.2",
                                "/", "60.0", "RUNNING"]
    assert lines[2].split()[-2:] == ["-", "RUNNING"]  # no memory reading in that step


def test_an_unknown_worker_is_not_found(registry: tuple[str, PagedHistory]) -> None:
    address, _ = registry
    result = run(address, "w-2")
    assert result.exception is not None and getattr(result.exception, "exit_code", None) == 3


@pytest.mark.parametrize(("args", "flag", "said"), [
    (["--since", "2x"], "--since", "is not a duration"),
    (["--since", "0s"], "--since", "more than zero"),
    (["--since", "1h", "--start", "2026-12-02"], "--since", "not both"),
    (["--start", "yesterday"], "--start", "is not a time"),
    (["--start", "2026-12-02T15:00Z", "--end", "2026-12-02T14:00Z"], "--end", "is not after the start"),
    (["--end", "tomorrow"], "--end", "is not a time"),
    (["--step", "soon"], "--step", "is not a duration"),
    (["--step", "0.5s"], "--step", "at least 1s"),
])
def test_bad_options_are_usage_errors_before_any_call(registry: tuple[str, PagedHistory], args: list[str],
                                                      flag: str, said: str) -> None:
    address, history = registry
    result = run(address, "w-1", *args)
    assert result.exit_code == 2, result.output
    assert flag in result.output and said in result.output
    assert history.requests == []
