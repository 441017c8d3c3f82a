"""Chaos on a real 3-node NATS cluster, the way an operator judges a deployment: registry, two collectors and
the notifier as separate processes, every stream and bucket at three replicas, moto for AWS, a real webhook
receiver. Kill the node that leads CML_METRICS while workers are polled, then stop the whole cluster and start
it again on the same stores. Each test prints what it measured (longest sample gap, deliveries per
transition) and asserts only on the facts: no service exits, polling continues within one interval plus
AckWait, lifecycle events sent during the outage take effect, nothing acknowledged is lost, every alert
transition is delivered exactly once."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import grpc
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError, ServiceUnavailableError

from cml.monitor.v1 import registry_service_pb2 as reg_pb2
from cml.monitor.v1 import registry_service_pb2_grpc as reg_grpc
from cml.monitor.v1 import worker_pb2
from cmlmon_core import subjects
from cmlmon_core.topology import ALERTS_STREAM, METRICS_STREAM, POLLS_STREAM, WORKERS_STREAM
from cmlmon_dev.receiver import Received, WebhookReceiver
from cmlmon_dev.servers import NatsCluster, free_port
from tests.e2e.conftest import ServiceLauncher, ServiceProcess
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REGION = "eu-west-1"
INTERVAL = 5
# While a stream elects a new leader (seconds, up to ten on a busy box), a sample's publish times out and its
# tick is nak'ed; it comes back after TICK_NAK_DELAY_SECONDS. AckWait covers the election.
ACK_WAIT = 10
SETTINGS = {
    "NATS_STREAM_REPLICAS": 3, "WORKER_METRICS_POLL_INTERVAL": INTERVAL, "TICK_ACK_WAIT_SECONDS": ACK_WAIT,
    "TICK_NAK_DELAY_SECONDS": 1,
    "CLOUDWATCH_DELAY_SECONDS": 0, "TICK_GATHER_SECONDS": 0.5, "RECONCILE_INTERVAL_SECONDS": 0,
    "SHUTDOWN_GRACE_SECONDS": 3, "ALERT_FOR_SECONDS": 0, "REGISTRY_OUTBOX_SWEEP_SECONDS": 2,
    "ALERT_SILENT_INTERVALS": 100,  # a full-cluster outage silences every worker; that alert is not under test
}
# One interval plus AckWait is the promise; on top: the gathering window, a poll round-trip and a 2-core box
# shared with a 3-node cluster and five processes.
GAP_BOUND = INTERVAL + ACK_WAIT + 4.0
HOT, COOL = 97.0, 20.0


@dataclass
class System:
    cluster: NatsCluster
    services: list[ServiceProcess]
    receiver: WebhookReceiver
    endpoint: str
    registry: reg_grpc.WorkerRegistryServiceAsyncStub
    nc: Client
    js: JetStreamContext
    names: dict[str, str] = field(default_factory=dict)  # worker id -> name

    def exited(self) -> dict[str, int | None]:
        return {p.name: p.process.poll() for p in self.services if p.process.poll() is not None}

    def launch(self, name: str, cpu: float) -> str:
        ec2: Any = boto3.client("ec2", region_name=REGION, endpoint_url=self.endpoint)
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        reply = ec2.run_instances(ImageId=image, InstanceType="c5.metal", MinCount=1, MaxCount=1,
                                  TagSpecifications=[{"ResourceType": "instance",
                                                      "Tags": [{"Key": "Name", "Value": name}]}])
        instance_id = str(reply["Instances"][0]["InstanceId"])
        self.put_cpu(instance_id, cpu)
        return instance_id

    def put_cpu(self, instance_id: str, value: float) -> None:
        cw: Any = boto3.client("cloudwatch", region_name=REGION, endpoint_url=self.endpoint)
        cw.put_metric_data(Namespace="AWS/EC2", MetricData=[{
            "MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
            "Timestamp": datetime.now(UTC), "Value": value, "Unit": "Percent"}])

    async def import_worker(self, name: str, cpu: float) -> worker_pb2.Worker:
        """Launch an instance and import it, retrying while the registry answers UNAVAILABLE (NATS failing
        over). A retry may find the instance adopted by the attempt that failed (then it is looked up), or
        claimed by an attempt that failed before saving its worker: ALREADY_EXISTS until that claim is
        orphaned (30 s), then the import goes through."""
        instance_id = await asyncio.to_thread(self.launch, name, cpu)
        request = reg_pb2.ImportWorkerRequest(region=REGION, instance_id=instance_id)
        worker = None
        for attempt in range(60):
            try:
                worker = (await self.registry.ImportWorker(request, timeout=20)).worker
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.ALREADY_EXISTS and attempt:
                    listed = await self.registry.ListWorkers(reg_pb2.ListWorkersRequest(), timeout=20)
                    worker = next((w for w in listed.workers if w.instance_id == instance_id), None)
                    if worker is not None:
                        break
                elif exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                print(f"ImportWorker {name}: {exc.code().name} ({exc.details()}), retrying")
                await asyncio.sleep(1)
        if worker is None:
            raise AssertionError(f"ImportWorker {name} never succeeded")
        self.names[worker.id] = name
        return worker

    async def terminate_worker(self, worker_id: str) -> None:
        for _ in range(30):
            try:
                await self.registry.TerminateWorker(reg_pb2.TerminateWorkerRequest(id=worker_id), timeout=20)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                print(f"TerminateWorker: {exc.code().name} ({exc.details()}), retrying")
                await asyncio.sleep(1)
        raise AssertionError("TerminateWorker never succeeded")

    async def has_schedule(self, worker_id: str) -> bool:
        try:
            await self.js.get_last_msg(POLLS_STREAM, subjects.poll_schedule(worker_id))
        except NotFoundError:
            return False
        return True

    async def stream(self, name: str, subject: str = ">") -> list[tuple[int, str, bytes, float]]:
        """Every message now in the stream: (sequence, subject, data, stored at [unix time])."""
        info = await self.js.stream_info(name)
        if not info.state.messages:
            return []
        sub = await self.js.subscribe(subject, stream=name, ordered_consumer=True,
                                      deliver_policy=DeliverPolicy.ALL)
        rows = []
        try:
            while True:
                msg = await sub.next_msg(timeout=10)
                meta = msg.metadata
                rows.append((meta.sequence.stream, msg.subject, msg.data, meta.timestamp.timestamp()))
                if meta.num_pending == 0:
                    return rows
        finally:
            await sub.unsubscribe()

    async def sample_times(self) -> dict[str, list[float]]:
        """When each worker's samples were stored in CML_METRICS, by worker id."""
        times: dict[str, list[float]] = defaultdict(list)
        for _, subject, _, stored in await self.stream(METRICS_STREAM):
            times[subject.rsplit(".", 1)[1]].append(stored)
        return times

    async def sampled_since(self, since: float, worker_ids: list[str], count: int = 1) -> bool:
        times = await self.sample_times()
        return all(len([t for t in times[w] if t > since]) >= count for w in worker_ids)

    def firing(self, worker_id: str) -> Received | None:
        return next((r for r in self.receiver.received
                     if r.json().get("status") == "firing" and r.json()["worker"]["id"] == worker_id), None)

    def deliveries(self) -> Counter[str]:
        return Counter(r.headers.get("webhook-id", "") for r in self.receiver.received)

    async def leader(self, stream: str) -> str:
        cluster = (await self.js.stream_info(stream)).cluster
        assert cluster is not None and cluster.leader
        return cluster.leader


# What the test's own reads meet while a node is down or the cluster elects leaders: not an answer, ask again.
TRANSIENT = (nats.errors.TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError)


def settles(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Awaitable[Any]:
    """eventually(), with the test's own NATS reads that failed for the moment (TRANSIENT) taken as "not yet"."""
    return eventually(check, timeout=timeout, interval=interval, retrying=TRANSIENT)


def longest_gaps(times: dict[str, list[float]], workers: dict[str, tuple[float, float]]) -> dict[str, float]:
    """For each worker, the longest time without a sample in its window (from, to): edges included."""
    gaps = {}
    for worker_id, (start, end) in workers.items():
        points = [start, *(t for t in times[worker_id] if start < t < end), end]
        gaps[worker_id] = max(b - a for a, b in itertools.pairwise(points))
    return gaps


@pytest.fixture
async def system(aws_endpoint: str, tmp_path: Path) -> AsyncIterator[System]:
    cluster = NatsCluster(tmp_path / "cluster", log_dir=tmp_path)
    await asyncio.to_thread(cluster.__enter__)
    env = {**os.environ, "NATS_URL": cluster.url, "AWS_ENDPOINT_URL": aws_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "LOG_FORMAT": "text", "LOG_LEVEL": "INFO", "METRICS_PORT": "0",
           **{k: str(v) for k, v in SETTINGS.items()}}
    launcher = ServiceLauncher(env, tmp_path)
    grpc_port = free_port()
    receiver = await WebhookReceiver().start()
    async def quiet(exc: Exception) -> None:  # reconnect attempts while nodes are down are expected here
        pass

    nc = await nats.connect(servers=cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                            error_cb=quiet)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        procs = [launcher.start("registry", GRPC_PORT=grpc_port)]
        procs += [launcher.start("collector", SERVICE_INSTANCE_ID=f"collector-{i}",
                                 REGISTRY_ADDRESS=f"127.0.0.1:{grpc_port}") for i in (1, 2)]
        procs.append(launcher.start("notifier", GRPC_PORT=0, WORKER_NOTIFICATION_WEBHOOKS=f"{receiver.url}/hook"))
        await asyncio.wait_for(channel.channel_ready(), 60)
        yield System(cluster, procs, receiver, aws_endpoint, reg_grpc.WorkerRegistryServiceStub(channel), nc,
                     nc.jetstream())
    finally:
        await channel.close(None)
        await asyncio.to_thread(launcher.stop_all)
        await nc.close()
        await receiver.stop()
        await asyncio.to_thread(cluster.stop)
        for proc in launcher.started:  # shown by pytest only when the test failed
            print(f"----- {proc.name} log -----\n{proc.log()[-20_000:]}")


async def test_killing_the_metrics_leader_loses_no_poll_event_or_alert(system: System, uid: str) -> None:
    began = time.time()
    cool = [await system.import_worker(f"cool{i}-{uid}", COOL) for i in (1, 2)]
    doomed = await system.import_worker(f"doomed-{uid}", COOL)
    await settles(lambda: system.sampled_since(0, [w.id for w in (*cool, doomed)], count=2), timeout=90,
                  interval=1)
    # A hot worker whose first sample is in: its alert fires on the second, one interval later, after the kill.
    hot = await system.import_worker(f"hot-{uid}", HOT)
    await settles(lambda: system.sampled_since(0, [hot.id]), timeout=60, interval=0.5)
    polled = [hot.id, *(w.id for w in cool)]
    print(f"steady after {time.time() - began:.1f}s")

    victim = system.cluster.node(await system.leader(METRICS_STREAM))
    victim.kill()
    killed_at = time.time()
    name = victim.membership.server_name if victim.membership else ""
    print(f"killed {name}, the CML_METRICS leader")

    # Lifecycle changes while the node is down: one worker adopted (hot from the start), one terminated.
    born = await system.import_worker(f"born-{uid}", HOT)
    await system.terminate_worker(doomed.id)
    terminated_at = time.time()
    await settles(lambda: system.has_schedule(born.id), timeout=60)
    await settles(lambda: _not(system.has_schedule(doomed.id)), timeout=60)
    # The notifier took in both events: its alert names the adopted worker, and its durable on CML_WORKERS has
    # acknowledged everything up to the termination.
    born_alert = await system.receiver.wait_for(
        lambda r: r.json().get("status") == "firing" and r.json()["worker"]["id"] == born.id, timeout=90)
    assert born_alert.json()["worker"]["name"] == f"born-{uid}"
    terminated = await settles(lambda: system.js.get_last_msg(WORKERS_STREAM, f"cml.workers.{doomed.id}.terminated"))
    terminated_seq = terminated.seq or 0
    await settles(lambda: _acked_up_to(system.js, WORKERS_STREAM, "notifier-workers", terminated_seq),
                  timeout=60)
    hot_alert = await system.receiver.wait_for(
        lambda r: r.json().get("status") == "firing" and r.json()["worker"]["id"] == hot.id, timeout=60)
    print(f"lifecycle and alerts seen {time.time() - killed_at:.1f}s after the kill; hot worker's alert "
          f"fired at {hot_alert.json()['starts_at']}")
    # Polling is measured with the node down for longer than the bound, so a worker left unpolled shows.
    window_end = killed_at + GAP_BOUND
    await settles(lambda: time.time() > window_end and system.sampled_since(window_end, polled),
                  timeout=90, interval=1)
    assert not system.exited(), system.exited()

    restarted_at = time.time()
    await asyncio.to_thread(system.cluster.restart, victim)
    await settles(lambda: _current_on(system.js, METRICS_STREAM, name), timeout=60)
    print(f"{name} back and current on {METRICS_STREAM} after {time.time() - restarted_at:.1f}s")

    times = await system.sample_times()
    windows = {w: (max(killed_at - INTERVAL, min(times[w])), restarted_at) for w in (*polled, born.id)}
    gaps = longest_gaps(times, windows)
    after_termination = [t for t in times[doomed.id] if t > terminated_at + INTERVAL + ACK_WAIT]
    deliveries = system.deliveries()
    print(f"longest sample gap per worker across the kill (bound {GAP_BOUND}s): "
          + ", ".join(f"{system.names[w]}={g:.1f}s" for w, g in gaps.items()))
    print(f"deliveries per transition: {dict(deliveries)}")
    assert max(gaps.values()) <= GAP_BOUND, gaps
    assert not after_termination, "the terminated worker is still polled"
    assert deliveries and set(deliveries.values()) == {1}, deliveries
    assert not system.exited(), system.exited()


async def test_a_full_cluster_restart_loses_nothing_and_the_pipeline_resumes(system: System, uid: str) -> None:
    hot = await system.import_worker(f"hot-{uid}", HOT)
    cool = await system.import_worker(f"cool-{uid}", COOL)
    await system.receiver.wait_for(lambda r: r.json().get("status") == "firing", timeout=90)
    await settles(lambda: system.sampled_since(0, [hot.id, cool.id], count=2), timeout=60, interval=1)
    before = {s: await system.stream(s) for s in (WORKERS_STREAM, ALERTS_STREAM, METRICS_STREAM)}
    kv_before = {s: await system.stream(s) for s in ("KV_cml_workers", "KV_cml_alerts")}

    await asyncio.to_thread(system.cluster.stop)
    stopped_at = time.time()
    await asyncio.sleep(15)  # the outage itself
    for node in system.cluster.nodes:
        node.start()
    await asyncio.to_thread(system.cluster.wait_ready, 120.0)
    print(f"cluster down {time.time() - stopped_at:.1f}s, ready again")

    # Services reconnect by themselves: polling resumes for the workers they had, and a new hot worker is
    # scheduled, polled, evaluated and delivered.
    resumed_at = time.time()
    born = await system.import_worker(f"born-{uid}", HOT)
    await system.receiver.wait_for(
        lambda r: r.json().get("status") == "firing" and r.json()["worker"]["id"] == born.id, timeout=120)
    await settles(lambda: system.sampled_since(resumed_at, [hot.id, cool.id]), timeout=60, interval=1)
    assert not system.exited(), system.exited()

    # Nothing acknowledged before the outage is lost: every message is still there, unchanged, and every key
    # of every bucket (a bucket keeps one revision per key, so a key may have moved on since).
    for stream, rows in before.items():
        after = {seq: (subject, data) for seq, subject, data, _ in await system.stream(stream)}
        lost = [seq for seq, subject, data, _ in rows if after.get(seq) != (subject, data)]
        assert not lost, f"{stream} lost messages {lost}"
    for stream, rows in kv_before.items():
        keys = {subject for _, subject, _, _ in await system.stream(stream)}
        assert not [subject for _, subject, _, _ in rows if subject not in keys], f"{stream} lost keys"
    # Every alert transition ever published is delivered, exactly once.
    transitions = await system.stream(ALERTS_STREAM)
    await settles(lambda: len(system.deliveries()) >= len(transitions), timeout=60)
    deliveries = system.deliveries()
    times = await system.sample_times()
    gap = max(longest_gaps(times, {w: (stopped_at - INTERVAL, resumed_at + INTERVAL)
                                   for w in (hot.id, cool.id)}).values())
    print(f"longest sample gap across the full outage: {gap:.1f}s; alert transitions {len(transitions)}; "
          f"deliveries per transition: {dict(deliveries)}")
    assert len(deliveries) == len(transitions)
    assert set(deliveries.values()) == {1}, deliveries


async def _not(check: Any) -> bool:
    return not await check


async def _acked_up_to(js: JetStreamContext, stream: str, durable: str, seq: int) -> bool:
    info = await js.consumer_info(stream, durable)
    return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= seq


async def _current_on(js: JetStreamContext, stream: str, server_name: str) -> bool:
    cluster = (await js.stream_info(stream)).cluster
    if cluster is None:
        return False
    return cluster.leader == server_name or any(
        r.name == server_name and r.current for r in cluster.replicas or [])
