"""Collector replicas as separate processes (`python -m collector`) against one nats-server and moto:
SIGTERM exits 0; replicas divide the ticks between them, and after a kill -9 of one replica the others poll
every worker and take over the ticks it held."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

import boto3
import httpx
import nats
from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from cml.monitor.v1 import events_pb2, worker_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.topology import ensure_topology
from cmlmon_dev.servers import NatsServer, free_port
from tests.e2e.conftest import ServiceLauncher
from tests.support import eventually

INTERVAL = 2
ACK_WAIT = 6
FAST = {"WORKER_METRICS_POLL_INTERVAL": INTERVAL, "CLOUDWATCH_DELAY_SECONDS": 0, "TICK_ACK_WAIT_SECONDS": ACK_WAIT,
        "TICK_REGION_LEASE_SECONDS": 2,
        "TICK_GATHER_SECONDS": 0.5, "RECONCILE_INTERVAL_SECONDS": 0, "SHUTDOWN_GRACE_SECONDS": 3}


def launch(endpoint: str, region: str, count: int) -> list[str]:
    ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    reply = ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=count, MaxCount=count)
    return [i["InstanceId"] for i in reply["Instances"]]


async def create_workers(nc: Client, endpoint: str, per_region: int) -> list[worker_pb2.Worker]:
    js = nc.jetstream()
    await ensure_topology(js)
    workers = []
    for region in ("us-east-1", "eu-west-1"):
        for instance_id in launch(endpoint, region, per_region):
            w = worker_pb2.Worker(id=f"w-{uuid.uuid4().hex[:10]}", region=region, instance_id=instance_id,
                                  status=worker_pb2.WORKER_STATUS_RUNNING)
            event_id = uuid.uuid4().hex
            data, headers = messages.encode(events_pb2.WorkerEvent(
                event_id=event_id, type=events_pb2.WORKER_EVENT_TYPE_CREATED, worker=w), msg_id=event_id)
            await js.publish(subjects.worker_event(w.id, "created"), data, headers=headers)
            workers.append(w)
    return workers


class Samples:
    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.by_replica: dict[str, int] = defaultdict(int)
        self.pollers: dict[str, set[str]] = defaultdict(set)  # "<worker id>:<tick sequence>" -> replicas
        self.after: dict[str, set[str]] = defaultdict(set)  # replicas that polled a worker since mark()
        self._marked = False

    async def on_msg(self, msg: Any) -> None:
        s = messages.decode(events_pb2.MetricSample, msg.data, msg.headers)
        self.times[s.worker_id].append(asyncio.get_running_loop().time())
        self.by_replica[s.collector_id] += 1
        self.pollers[msg.headers["Nats-Msg-Id"]].add(s.collector_id)
        if self._marked:
            self.after[s.worker_id].add(s.collector_id)

    def mark(self) -> None:
        self._marked = True


async def wait_in_flight(port: int, timeout: float) -> bool:
    """Wait until the replica reports ticks in flight (fetched, not yet acked): the moment to kill it."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient() as http:
        while asyncio.get_running_loop().time() < deadline:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            for line in text.splitlines():
                if line.startswith("cmlmon_collector_ticks_in_flight ") and float(line.split()[1]) > 0:
                    return True
            await asyncio.sleep(0.01)
    return False


async def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_sigterm_finishes_and_exits_zero(services: ServiceLauncher, own_nats: NatsServer,
                                               aws_endpoint: str) -> None:
    proc = services.start("collector", SERVICE_INSTANCE_ID="solo", **FAST)
    nc = await nats.connect(own_nats.url)
    try:
        samples = Samples()
        await nc.subscribe(subjects.METRICS_ALL, cb=samples.on_msg)
        workers = await create_workers(nc, aws_endpoint, per_region=2)
        await wait_until(lambda: all(samples.times[w.id] for w in workers), 60, "a sample of every worker")
    finally:
        await nc.drain()
    assert proc.stop(timeout=20) == 0
    assert "collector stopped" in proc.log()


class Ticks:
    """Every tick stored in CML_POLLS, as "<worker id>:<stream sequence>" (what the sample of it is called),
    with when it was seen; read through an ordered consumer of its own, apart from the collectors' durables."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, int, float]] = {}  # tick -> worker id, stream sequence, seen at

    async def on_msg(self, msg: Any) -> None:
        tick = messages.decode(events_pb2.PollTick, msg.data, msg.headers)
        seq = msg.metadata.sequence.stream
        self.seen[f"{tick.worker_id}:{seq}"] = (tick.worker_id, seq, asyncio.get_running_loop().time())

    def pending_at(self, moment: float) -> set[str]:
        """Each worker's newest tick seen by then: the one CML_POLLS held for it (one message per subject), so
        one some replica must poll. An older tick may rightly never be polled: replaced before any replica
        fetched it (a schedule's first tick and its first cron firing in one second), it is coalesced."""
        newest: dict[str, str] = {}
        for tick, (worker, _, at) in sorted(self.seen.items(), key=lambda item: item[1][1]):
            if at <= moment:
                newest[worker] = tick
        return set(newest.values())


async def test_three_replicas_share_ticks_and_survive_a_kill_9(services: ServiceLauncher, own_nats: NatsServer,
                                                             aws_endpoint: str) -> None:
    # Ticks every 10 s and an AckWait of 5 s: a tick the victim held comes back to a survivor before its
    # worker's next tick could replace it, so each tick pending at the kill must end up polled.
    settings = {**FAST, "WORKER_METRICS_POLL_INTERVAL": 10, "TICK_ACK_WAIT_SECONDS": 5}
    ports = [free_port() for _ in range(3)]
    replicas = [services.start("collector", SERVICE_INSTANCE_ID=f"r{i}", **{**settings, "METRICS_PORT": ports[i]})
                for i in range(3)]
    nc = await nats.connect(own_nats.url)
    js = nc.jetstream()
    loop = asyncio.get_running_loop()
    try:
        samples, ticks = Samples(), Ticks()
        await nc.subscribe(subjects.METRICS_ALL, cb=samples.on_msg)
        await ensure_topology(js)
        await js.subscribe(subjects.POLL_TICKS_ALL, cb=ticks.on_msg, ordered_consumer=True,
                           deliver_policy=DeliverPolicy.NEW)
        workers = await create_workers(nc, aws_endpoint, per_region=10)
        await eventually(lambda: all(len(samples.times[w.id]) >= 2 for w in workers), timeout=90)
        await eventually(lambda: len(samples.by_replica) >= 2, timeout=60)
        # Shared, not copied: each tick was polled by one replica (the sample id is worker and tick sequence).
        assert all(len(polled_by) == 1 for polled_by in samples.pollers.values()), samples.pollers

        victim = max(("r0", "r1", "r2"), key=lambda r: samples.by_replica[r])  # the busiest one
        assert await wait_in_flight(ports[int(victim[1])], timeout=30), "the victim never had ticks in flight"
        replicas[int(victim[1])].kill()  # returns once the process is gone
        killed_at = loop.time()
        samples.mark()
        survivors = {"r0", "r1", "r2"} - {victim}

        # Every worker is polled again, by the survivors...
        await eventually(lambda: all(samples.after[w.id] & survivors for w in workers), timeout=60)
        # ...and every worker's tick pending at the kill was polled, those the victim held included: they come
        # back after AckWait, before their workers' next ticks replace them.
        pending = ticks.pending_at(killed_at)
        assert len(pending) == len(workers)
        await eventually(lambda: pending <= samples.pollers.keys(), timeout=60)
    finally:
        await nc.drain()
    for proc in replicas:
        if proc.process and proc.process.poll() is None:
            assert proc.stop(timeout=20) == 0
