"""Metric history, pure parts: the window a request names and the downsampling into min/avg/max buckets."""

from __future__ import annotations

import pytest

from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from registry.adapters.history import CHUNK_SECONDS, chunk_key, chunk_start, one_sample_chunk, samples_in
from registry.domain.history import Downsampler, Window
from registry.errors import InvalidArgument
from registry.service.history import page_size, window_of

S = 1_000_000_000


def sample(cpu: float | None = None, memory: float | None = None,
           status: int = worker_pb2.WORKER_STATUS_RUNNING) -> events_pb2.MetricSample:
    out = events_pb2.MetricSample(status=status)  # type: ignore[arg-type]
    if cpu is not None:
        out.cpu_utilization = cpu
    if memory is not None:
        out.memory_utilization = memory
    return out


def test_buckets_hold_min_avg_max_per_step_and_skip_missing_values() -> None:
    down = Downsampler(Window(100 * S, 1000 * S, 60 * S), limit=10)
    assert down.offer(sample(10, 50), 100 * S)
    assert down.offer(sample(30), 159 * S)
    assert down.offer(sample(20, status=worker_pb2.WORKER_STATUS_STOPPING), 130 * S)  # late, same step
    assert down.offer(sample(memory=70), 220 * S)  # third step: the second one is empty
    first, third = down.buckets()
    assert first.start_time.seconds == 100 and first.sample_count == 3
    assert (first.cpu_utilization.min, first.cpu_utilization.avg, first.cpu_utilization.max) == (10, 20, 30)
    assert first.memory_utilization.avg == 50 and first.status == worker_pb2.WORKER_STATUS_STOPPING
    assert third.start_time.seconds == 220 and not third.HasField("cpu_utilization")
    assert third.memory_utilization.max == 70


def test_a_full_page_refuses_a_new_bucket_but_fills_the_ones_it_has() -> None:
    down = Downsampler(Window(0, 1000 * S, 10 * S), limit=2)
    assert down.offer(sample(1), 0) and down.offer(sample(2), 10 * S)
    assert not down.offer(sample(3), 20 * S)
    assert down.offer(sample(4), 15 * S)
    assert [b.sample_count for b in down.buckets()] == [1, 2]


def test_the_window_is_half_open() -> None:
    window = Window(10 * S, 20 * S)
    assert window.holds(10 * S) and window.holds(20 * S - 1) and not window.holds(20 * S)


def observed(at_ns: int, cpu: float) -> events_pb2.MetricSample:
    out = sample(cpu)
    out.observe_time.FromNanoseconds(at_ns)
    return out


def test_a_chunk_is_six_hours_of_observe_time_and_grows_by_concatenation() -> None:
    span = 6 * 3600
    assert span == CHUNK_SECONDS
    assert chunk_start(2 * span * S) == chunk_start((3 * span - 1) * S) == 2 * span
    assert chunk_start(3 * span * S) == 3 * span
    assert chunk_key("w-a", 43_200) == "w-a.43200"
    value = b"".join(one_sample_chunk(observed(t * S, t)) for t in (7230, 7210, 7250, 7220))  # arrival order
    decoded = events_pb2.MetricSampleChunk.FromString(value)
    assert [s.cpu_utilization for s in decoded.samples] == [7230, 7210, 7250, 7220]
    # Read back in observe order, within the half-open window only.
    assert [s.cpu_utilization for s in samples_in(value, 7210 * S, 7250 * S)] == [7210, 7220, 7230]


def request(**fields: object) -> rs.GetWorkerMetricsRequest:
    req = rs.GetWorkerMetricsRequest(worker_id="w-1", **fields)  # type: ignore[arg-type]
    req.start_time.FromSeconds(1000)
    return req


@pytest.mark.parametrize(("build", "field"), [
    (lambda: rs.GetWorkerMetricsRequest(worker_id="w-1"), "start_time"),
    (lambda: request(end_time={"seconds": 1000}), "end_time"),
    (lambda: request(end_time={"seconds": 10**13}), "end_time"),
    (lambda: request(step={"nanos": 500_000_000}), "step"),
    (lambda: request(step={"seconds": -60}), "step"),
])
def test_bad_windows_name_their_field(build: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        window_of(build(), 2000 * S)  # type: ignore[operator]
    assert refused.value.field == field


def test_the_window_ends_now_unless_told_and_pages_are_bounded() -> None:
    assert window_of(request(), 2000 * S) == Window(1000 * S, 2000 * S, 0)
    assert window_of(request(end_time={"seconds": 1500}, step={"seconds": 60}), 0) == \
        Window(1000 * S, 1500 * S, 60 * S)
    assert page_size(request()) == 1000 and page_size(request(page_size=5)) == 5
    with pytest.raises(InvalidArgument):
        page_size(request(page_size=10_001))
