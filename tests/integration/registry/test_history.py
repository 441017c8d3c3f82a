"""GetWorkerMetrics against a real registry and nats-server: one worker's samples of a window from CML_METRICS,
raw or downsampled, in pages, read through a consumer filtered on that worker's subject."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client
from nats.js import JetStreamContext

from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_core import messages, subjects
from cmlmon_core.topology import METRICS_STREAM
from registry.adapters.history import JetStreamMetricHistory, ReadFrom
from tests.integration.registry.conftest import AMI, REGION, RunningRegistry

pytestmark = pytest.mark.integration

STEP = 60


async def publish(js: JetStreamContext, worker: worker_pb2.Worker, observed: int, cpu: float) -> None:
    sample = events_pb2.MetricSample(worker_id=worker.id, region=worker.region, instance_id=worker.instance_id,
                                     status=worker_pb2.WORKER_STATUS_RUNNING, cpu_utilization=cpu)
    sample.observe_time.FromSeconds(observed)
    data, headers = messages.encode(sample)
    await js.publish(subjects.metric(worker.region, worker.id), data, headers=headers)


async def create(registry: RunningRegistry, name: str) -> worker_pb2.Worker:
    return (await registry.stub.CreateWorker(rs.CreateWorkerRequest(
        request_id=name, name=name, region=REGION, instance_type="t3.micro", ami_id=AMI))).worker


def query(worker: worker_pb2.Worker, start: int, end: int, **fields: object) -> rs.GetWorkerMetricsRequest:
    return rs.GetWorkerMetricsRequest(worker_id=worker.id, start_time=Timestamp(seconds=start),
                                      end_time=Timestamp(seconds=end), **fields)  # type: ignore[arg-type]


@pytest.fixture
async def two_workers(registry: RunningRegistry, js: JetStreamContext, uid: str
                      ) -> tuple[worker_pb2.Worker, worker_pb2.Worker, int]:
    """Worker a with ten samples a minute apart (cpu 0..9) from t0, worker b's samples interleaved."""
    a, b = await create(registry, f"hist-a-{uid}"), await create(registry, f"hist-b-{uid}")
    # Stored now: a window is read from the first sample stored at its start, and until a sample stored more than
    # STORE_LAG_SECONDS after its end; t0 keeps every window below within both bounds.
    t0 = int(time.time()) - 400
    for i in range(10):
        await publish(js, a, t0 + i * STEP, float(i))
        await publish(js, b, t0 + i * STEP, 100.0)
    return a, b, t0


async def test_the_window_holds_the_workers_samples_only(
        registry: RunningRegistry, two_workers: tuple[worker_pb2.Worker, worker_pb2.Worker, int]) -> None:
    a, _, t0 = two_workers
    got = await registry.stub.GetWorkerMetrics(query(a, t0 + 2 * STEP, t0 + 7 * STEP))
    assert [s.cpu_utilization for s in got.samples] == [2, 3, 4, 5, 6]
    assert {s.worker_id for s in got.samples} == {a.id} and not got.buckets and not got.next_page_token


async def test_a_step_gives_min_avg_max_buckets(
        registry: RunningRegistry, two_workers: tuple[worker_pb2.Worker, worker_pb2.Worker, int]) -> None:
    a, _, t0 = two_workers
    got = await registry.stub.GetWorkerMetrics(query(a, t0, t0 + 10 * STEP, step={"seconds": 3 * STEP}))
    summary = [(b.start_time.seconds, b.sample_count, b.cpu_utilization.min, b.cpu_utilization.avg,
                b.cpu_utilization.max) for b in got.buckets]
    assert summary == [(t0, 3, 0, 1, 2), (t0 + 180, 3, 3, 4, 5), (t0 + 360, 3, 6, 7, 8), (t0 + 540, 1, 9, 9, 9)]
    assert not got.samples


async def test_long_windows_come_in_pages_bound_to_their_query(
        registry: RunningRegistry, two_workers: tuple[worker_pb2.Worker, worker_pb2.Worker, int]) -> None:
    a, _, t0 = two_workers
    req = query(a, t0, t0 + 10 * STEP, page_size=3)
    seen: list[float] = []
    pages = 0
    while True:
        page = await registry.stub.GetWorkerMetrics(req)
        seen += [s.cpu_utilization for s in page.samples]
        pages += 1
        if not page.next_page_token:
            break
        req.page_token = page.next_page_token
    assert seen == [float(i) for i in range(10)] and pages == 4
    stepped = query(a, t0, t0 + 10 * STEP, page_size=2, step={"seconds": 2 * STEP})
    first = await registry.stub.GetWorkerMetrics(stepped)
    stepped.page_token = first.next_page_token
    second = await registry.stub.GetWorkerMetrics(stepped)
    assert [b.sample_count for b in (*first.buckets, *second.buckets)] == [2, 2, 2, 2]
    other = query(a, t0 + 1, t0 + 10 * STEP, page_size=3, page_token=first.next_page_token)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await registry.stub.GetWorkerMetrics(other)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_unknown_worker_is_not_found(registry: RunningRegistry, uid: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await registry.stub.GetWorkerMetrics(rs.GetWorkerMetricsRequest(
            worker_id=f"w-nobody-{uid}", start_time=Timestamp(seconds=1)))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_read_is_filtered_on_the_workers_subject_by_the_server(
        nc: Client, js: JetStreamContext, two_workers: tuple[worker_pb2.Worker, worker_pb2.Worker, int]) -> None:
    a = two_workers[0]
    reading = JetStreamMetricHistory(nc, batch=4).read(a.region, a.id, ReadFrom(time=None))
    try:
        first = await anext(reading)
        consumers = [c for c in await js.consumers_info(METRICS_STREAM)
                     if c.config.filter_subject == subjects.metric(a.region, a.id)]
        assert len(consumers) == 1  # the server holds only worker a's samples for this read
        assert (consumers[0].num_pending or 0) <= 9  # what is left of worker a's ten, none of worker b's
        assert first.sample.worker_id == a.id
        rest = [s async for s in reading]
    finally:
        await reading.aclose()
    assert [s.sample.cpu_utilization for s in (first, *rest)] == [float(i) for i in range(10)]
    assert all(s.sample.worker_id == a.id for s in rest)
    assert [c for c in await js.consumers_info(METRICS_STREAM)
            if c.config.filter_subject == subjects.metric(a.region, a.id)] == []  # deleted after the read
