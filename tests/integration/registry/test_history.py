"""GetWorkerMetrics against a real registry and nats-server: the registry keeps each worker's samples from
CML_METRICS in the bucket cml_metric_history (a key per worker and six hours) and answers a window from the keys the
window overlaps, raw or downsampled, in pages; across a restart; a worker without samples; retention."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig

from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_core import messages, subjects
from cmlmon_core.nats_conn import connect
from cmlmon_core.topology import HISTORY_BUCKET, METRICS_STREAM, ensure_topology
from cmlmon_dev.servers import NatsServer
from registry.adapters.history import CHUNK_SECONDS, JetStreamMetricHistory, chunk_key
from tests.integration.registry.conftest import (
    AMI,
    REGION,
    RunningRegistry,
    eventually,
    registry_settings,
    running_registry,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]

STEP = 60
S = 1_000_000_000


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


async def kept(registry: RunningRegistry, worker: worker_pb2.Worker, start: int, count: int) -> None:
    """Wait until the registry's consumer has kept `count` samples of the worker from start."""
    async def all_there() -> bool:
        got = await registry.stub.GetWorkerMetrics(query(worker, start, start + 3600))
        return len(got.samples) >= count

    await eventually(all_there, timeout=60)


@pytest.fixture
async def two_workers(registry: RunningRegistry, js: JetStreamContext, uid: str
                      ) -> tuple[worker_pb2.Worker, worker_pb2.Worker, int]:
    """Worker a with ten samples a minute apart (cpu 0..9) from t0, worker b's samples interleaved; samples 0-4
    of each in one key (span of observe time), 5-9 in the next one."""
    a, b = await create(registry, f"hist-a-{uid}"), await create(registry, f"hist-b-{uid}")
    t0 = int(time.time()) // CHUNK_SECONDS * CHUNK_SECONDS - 5 * STEP
    for i in range(10):
        await publish(js, a, t0 + i * STEP, float(i))
        await publish(js, b, t0 + i * STEP, 100.0)
    await kept(registry, a, t0, 10)
    await kept(registry, b, t0, 10)
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




async def test_a_read_asks_only_for_the_keys_of_that_worker_and_window(
        registry: RunningRegistry, nc: Client, js: JetStreamContext,
        two_workers: tuple[worker_pb2.Worker, worker_pb2.Worker, int]) -> None:
    a, _, t0 = two_workers
    second = t0 + 5 * STEP  # where the second key starts
    kv = await js.key_value(HISTORY_BUCKET)
    for start, cpus in ((second - CHUNK_SECONDS, range(5)), (second, range(5, 10))):
        value = (await kv.get(chunk_key(a.id, start))).value or b""
        assert [s.cpu_utilization for s in events_pb2.MetricSampleChunk.FromString(value).samples] == list(cpus)
    requests: list[dict[str, list[str]]] = []

    async def seen(msg: Msg) -> None:
        if a.id.encode() in msg.data:  # this test's reads only
            requests.append(json.loads(msg.data))

    sniffer = await nc.subscribe(f"$JS.API.DIRECT.GET.KV_{HISTORY_BUCKET}", cb=seen)  # watches, does not answer
    await nc.flush()  # the server knows of the sniffer before the reads
    try:
        got = await registry.stub.GetWorkerMetrics(query(a, t0 + STEP, t0 + 9 * STEP))
        assert [s.cpu_utilization for s in got.samples] == [float(i) for i in range(1, 9)]
        since_1970 = await registry.stub.GetWorkerMetrics(query(a, 1, t0 + 3600))
        assert len(since_1970.samples) == 10
        await nc.flush()
        await eventually(lambda: len(requests) == 2)
    finally:
        await sniffer.unsubscribe()
    prefix = f"$KV.{HISTORY_BUCKET}."
    assert requests[0] == {"multi_last": [prefix + chunk_key(a.id, s) for s in (second - CHUNK_SECONDS, second)]}
    # From 1970: only the spans the bucket can still hold (its TTL, a day here), none of another worker.
    asked = requests[1]["multi_last"]
    assert 86_400 // CHUNK_SECONDS <= len(asked) <= 86_400 // CHUNK_SECONDS + 2
    assert all(s.startswith(prefix + a.id + ".") for s in asked)


async def test_a_worker_without_samples_has_an_empty_history(registry: RunningRegistry, uid: str) -> None:
    quiet = await create(registry, f"hist-quiet-{uid}")
    now = int(time.time())
    raw = await registry.stub.GetWorkerMetrics(query(quiet, now - 86_400, now))
    stepped = await registry.stub.GetWorkerMetrics(query(quiet, now - 86_400, now, step={"seconds": 300}))
    assert raw == rs.GetWorkerMetricsResponse() and stepped == rs.GetWorkerMetricsResponse()


async def test_history_is_kept_across_a_restart_of_the_registry(
        nats_url: str, aws_endpoint: str, js: JetStreamContext, uid: str) -> None:
    settings = registry_settings(nats_url, aws_endpoint)
    t0 = int(time.time()) // CHUNK_SECONDS * CHUNK_SECONDS - CHUNK_SECONDS + 10 * STEP  # all in one key
    async with running_registry(settings) as first:
        worker = await create(first, f"hist-restart-{uid}")
        for i in range(3):
            await publish(js, worker, t0 + i * STEP, float(i))
        await kept(first, worker, t0, 3)
    for i in range(3, 5):  # while no registry runs: consumed after the restart
        await publish(js, worker, t0 + i * STEP, float(i))
    async with running_registry(settings) as second:  # nothing cached: the key is read, then appended to
        await kept(second, worker, t0, 5)
        await publish(js, worker, t0 + 5 * STEP, 5.0)
        await kept(second, worker, t0, 6)
        got = await second.stub.GetWorkerMetrics(query(worker, t0, t0 + 3600))
    assert [s.cpu_utilization for s in got.samples] == [float(i) for i in range(6)]


async def test_replicas_appending_to_one_key_keep_every_sample_once(nc: Client, js: JetStreamContext, uid: str
                                                                   ) -> None:
    one = await JetStreamMetricHistory.open(nc, retention_seconds=86_400)
    two = await JetStreamMetricHistory.open(nc, retention_seconds=86_400)  # a second registry replica
    worker = worker_pb2.Worker(id=f"w-replicas-{uid}", region=REGION, instance_id="i-0123456789abcdef0")
    t0 = int(time.time()) // CHUNK_SECONDS * CHUNK_SECONDS - CHUNK_SECONDS

    def at(i: int) -> events_pb2.MetricSample:
        sample = events_pb2.MetricSample(worker_id=worker.id, region=REGION, cpu_utilization=float(i))
        sample.observe_time.FromSeconds(t0 + i * STEP)
        return sample

    await one.append(at(0))
    await two.append(at(1))  # reads the key replica one wrote
    await one.append(at(2))  # its cached revision is stale: refused, read again, appended
    await one.append(at(1))  # a redelivery of a sample replica two kept
    await two.append(at(0))
    read = [s.cpu_utilization async for s in two.read(worker.id, t0 * S, (t0 + 3600) * S)]
    assert read == [0.0, 1.0, 2.0]


async def test_history_lasts_as_long_as_cml_metrics_then_is_gone(nc: Client, js: JetStreamContext, uid: str
                                                                  ) -> None:
    bucket_info = await js.stream_info(f"KV_{HISTORY_BUCKET}")
    assert bucket_info.config.max_age == (await js.stream_info(METRICS_STREAM)).config.max_age
    # The same layout with a three-second retention: read while kept, then nothing (and no error) once expired.
    bucket = f"hist_ttl_{uid}".replace("-", "_")
    await js.create_key_value(KeyValueConfig(bucket=bucket, history=1, ttl=3.0, direct=True))
    try:
        history = await JetStreamMetricHistory.open(nc, retention_seconds=3.0, bucket=bucket)
        sample = events_pb2.MetricSample(worker_id=f"w-ttl-{uid}", region=REGION, cpu_utilization=1.0)
        sample.observe_time.GetCurrentTime()
        now = time.time_ns()
        await history.append(sample)
        assert [s.cpu_utilization async for s in history.read(sample.worker_id, now - 60 * S, now + 60 * S)] == [1.0]

        async def gone() -> bool:
            return [s async for s in history.read(sample.worker_id, now - 60 * S, now + 60 * S)] == []

        await eventually(gone, timeout=30)
    finally:
        await js.delete_key_value(bucket)


async def test_the_registry_nats_user_may_keep_and_read_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """As user `registry` of deploy/nats/cmlmon-accounts.conf: the bucket is created, appended to, read."""
    shutil.copy(ROOT / "deploy" / "nats" / "cmlmon-accounts.conf", tmp_path / "cmlmon-accounts.conf")
    (config := tmp_path / "nats-server.conf").write_text("include ./cmlmon-accounts.conf\n")
    for user in ("registry", "collector", "notifier", "autopilot"):
        monkeypatch.setenv(f"CMLMON_{user.upper()}_NATS_PASSWORD", f"pw-{user}")
    with NatsServer(tmp_path / "jetstream", log_file=tmp_path / "nats-server.log", config_file=config) as server:
        settings = registry_settings(server.url, "http://127.0.0.1:9", nats_user="registry",
                                     nats_password="pw-registry", nats_inbox_prefix="_INBOX.registry")
        async with connect(settings, "registry-history-test") as client:
            await ensure_topology(client.jetstream())
            history = await JetStreamMetricHistory.open(client, retention_seconds=86_400)
            t0 = int(time.time()) // CHUNK_SECONDS * CHUNK_SECONDS - CHUNK_SECONDS
            for i in range(2):
                sample = events_pb2.MetricSample(worker_id="w-secured", region=REGION, cpu_utilization=float(i))
                sample.observe_time.FromSeconds(t0 + i * STEP)
                await history.append(sample)
            assert [s.cpu_utilization async for s in history.read("w-secured", t0 * S, (t0 + 3600) * S)] == [0, 1]
