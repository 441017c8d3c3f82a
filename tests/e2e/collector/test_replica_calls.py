"""AWS calls do not grow with the replica count: three collector processes, two regions of 100 workers each on
clock-aligned schedules, against the benchmark's fake AWS endpoint (it counts the calls it answers). Per interval a
region of 100 workers needs one DescribeInstanceStatus; a region's batch split between replicas needs two."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from cml.monitor.v1 import events_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.topology import ensure_topology
from cmlmon_dev.servers import NatsServer, free_port, wait_for_port
from collector.adapters import leases
from collector.adapters.schedules import JetStreamSchedules
from collector.domain.model import Target
from tests.e2e.conftest import ServiceLauncher
from tests.support import eventually

FAKE_AWS = Path(__file__).resolve().parents[3] / "bench" / "fake_aws.py"
INTERVAL = 5
REGIONS = ("us-east-1", "eu-west-1")
PER_REGION = 100
COUNTED_INTERVALS = 5
LEASE_SECONDS = 6


@pytest.fixture
def fake_aws() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(FAKE_AWS), "--port", str(port), "--latency", "0"])
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def calls(endpoint: str) -> Counter[str]:
    with urllib.request.urlopen(f"{endpoint}/stats") as reply:
        return Counter(json.loads(reply.read()))


async def lease_holders(nc: Client, js: JetStreamContext) -> tuple[set[str], dict[str, str]]:
    """The live replicas and each region's holder (region -> collector id), as the collectors' lease bucket says
    (read as a collector reads it; the lease time is the one the replicas run with)."""
    return await leases.RegionLeases(nc, js, "test-observer", LEASE_SECONDS).snapshot()


async def test_three_replicas_make_the_calls_of_one(fake_aws: str, services: ServiceLauncher,
                                                     own_nats: NatsServer) -> None:
    # fake_aws first: set up before the collectors and stopped after them
    nc = await nats.connect(own_nats.url)
    js = nc.jetstream()
    await ensure_topology(js)
    schedules = JetStreamSchedules(nc, js)
    workers = [Target(worker_id=f"w-{r}-{i}", region=region, instance_id=f"i-{r}{i:016x}", interval_seconds=INTERVAL)
               for r, region in enumerate(REGIONS) for i in range(PER_REGION)]
    await asyncio.gather(*(schedules.put(t) for t in workers))
    ticked: dict[str, float] = {}  # "<worker id>:<tick stream sequence>" (its sample's Nats-Msg-Id) -> stored at
    samples: list[tuple[str, str, str]] = []  # tick, worker id, collector id

    async def on_tick(msg: Any) -> None:
        tick = messages.decode(events_pb2.PollTick, msg.data, msg.headers)
        ticked[f"{tick.worker_id}:{msg.metadata.sequence.stream}"] = msg.metadata.timestamp.timestamp()

    async def on_sample(msg: Any) -> None:
        s = messages.decode(events_pb2.MetricSample, msg.data, msg.headers)
        samples.append((msg.headers["Nats-Msg-Id"], s.worker_id, s.collector_id))

    def ticked_in(start: float, end: float) -> list[tuple[str, str]]:
        """The samples (worker id, collector id) of the ticks stored from start to before end; by when the tick
        was stored, as a sample can come late on a loaded machine."""
        return [(w, c) for tick, w, c in samples if start <= ticked.get(tick, -1.0) < end]

    async def polled(interval: float) -> None:
        """Wait until every worker has a sample of its tick of the interval starting then: all its calls are made,
        and the next interval's come only when its ticks fire."""
        while {w for w, _ in ticked_in(interval, interval + INTERVAL)} != {t.worker_id for t in workers}:
            assert time.time() < interval + 4 * INTERVAL, f"not every worker was polled in the interval at {interval}"
            await asyncio.sleep(0.1)

    await js.subscribe(subjects.POLL_TICKS_ALL, cb=on_tick, ordered_consumer=True)
    await nc.subscribe(subjects.METRICS_ALL, cb=on_sample)
    replicas = {f"r{i}" for i in range(3)}
    for replica in sorted(replicas):
        services.start("collector", SERVICE_INSTANCE_ID=replica, AWS_ENDPOINT_URL=fake_aws,
                       WORKER_METRICS_POLL_INTERVAL=INTERVAL, CLOUDWATCH_DELAY_SECONDS=0, TICK_GATHER_SECONDS=2,
                       TICK_REGION_LEASE_SECONDS=LEASE_SECONDS, RECONCILE_INTERVAL_SECONDS=0, SHUTDOWN_GRACE_SECONDS=2)
    try:
        # Counted once the leases have settled: all three replicas live, each region held by a replica of its
        # own (the first replica up takes both and hands one over). A region moving mid-interval may split a batch.
        async def settled() -> tuple[set[str], dict[str, str]] | None:
            members, holders = await lease_holders(nc, js)
            spread = set(holders) == set(REGIONS) and len(set(holders.values())) == len(REGIONS)
            return (members, holders) if members == replicas and spread else None

        members, holders = await eventually(settled, timeout=90, interval=0.5)
        # Count from the end of one interval's polls to the end of the polls COUNTED_INTERVALS later: every call
        # of those intervals and none of another.
        first = time.time() // INTERVAL * INTERVAL + INTERVAL
        await polled(first)
        before = calls(fake_aws)
        last = first + COUNTED_INTERVALS * INTERVAL
        await polled(last)
        after = calls(fake_aws)
        assert await lease_holders(nc, js) == (members, holders), "a region lease moved while the calls were counted"
    finally:
        await nc.drain()

    ideal = COUNTED_INTERVALS * len(REGIONS) * -(-PER_REGION // 100)
    made = after["DescribeInstanceStatus"] - before["DescribeInstanceStatus"]
    assert made <= ideal * 1.1, f"{made} DescribeInstanceStatus calls in {COUNTED_INTERVALS} intervals (ideal {ideal})"
    # one replica per region: shared, and with whole batches (the third replica stands by)
    assert {c for _, c in ticked_in(first + INTERVAL, last + INTERVAL)} == set(holders.values())
