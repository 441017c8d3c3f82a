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

from cml.monitor.v1 import events_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.topology import ensure_topology
from cmlmon_dev.servers import NatsServer, free_port, wait_for_port
from collector.adapters.schedules import JetStreamSchedules
from collector.domain.model import Target
from tests.e2e.conftest import ServiceLauncher

FAKE_AWS = Path(__file__).resolve().parents[3] / "bench" / "fake_aws.py"
INTERVAL = 5
REGIONS = ("us-east-1", "eu-west-1")
PER_REGION = 100
COUNTED_INTERVALS = 5


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


async def until_phase(phase: float) -> None:
    """Sleep until `phase` seconds into the next interval of the wall clock (the schedules fire on its start)."""
    now = time.time()
    await asyncio.sleep(now - now % INTERVAL + INTERVAL + phase - now)


@pytest.mark.skip(reason="flaky: about 1 run in 5 (once on a quiet CI run) counts a split batch, 12 calls against "
                         "an ideal of 10 in 5 intervals, likely a lease moving while it is counted; issue 14 stays "
                         "open until the cause is found. bench/collector.py --replicas measures the same property.")
async def test_three_replicas_make_the_calls_of_one(services: ServiceLauncher, own_nats: NatsServer,
                                                     fake_aws: str) -> None:
    nc = await nats.connect(own_nats.url)
    js = nc.jetstream()
    await ensure_topology(js)
    schedules = JetStreamSchedules(nc, js)
    workers = [Target(worker_id=f"w-{r}-{i}", region=region, instance_id=f"i-{r}{i:016x}", interval_seconds=INTERVAL)
               for r, region in enumerate(REGIONS) for i in range(PER_REGION)]
    await asyncio.gather(*(schedules.put(t) for t in workers))
    samples: list[tuple[float, str, str]] = []

    async def on_sample(msg: Any) -> None:
        s = messages.decode(events_pb2.MetricSample, msg.data, msg.headers)
        samples.append((time.time(), s.worker_id, s.collector_id))

    await nc.subscribe(subjects.METRICS_ALL, cb=on_sample)
    for i in range(3):
        services.start("collector", SERVICE_INSTANCE_ID=f"r{i}", AWS_ENDPOINT_URL=fake_aws,
                       WORKER_METRICS_POLL_INTERVAL=INTERVAL, CLOUDWATCH_DELAY_SECONDS=0, TICK_GATHER_SECONDS=2,
                       TICK_REGION_LEASE_SECONDS=6, RECONCILE_INTERVAL_SECONDS=0, SHUTDOWN_GRACE_SECONDS=2)
    try:
        deadline = time.monotonic() + 90
        while {w for _, w, _ in samples} != {t.worker_id for t in workers}:
            assert time.monotonic() < deadline, "not every worker was polled"
            await asyncio.sleep(0.2)
        await until_phase(INTERVAL - 1)  # the leases have settled; polls of an interval end before its last second
        await until_phase(INTERVAL - 1)
        start, before = time.time(), calls(fake_aws)
        for _ in range(COUNTED_INTERVALS):
            await until_phase(INTERVAL - 1)
        after, end = calls(fake_aws), time.time()
    finally:
        await nc.drain()

    counted = [(w, c) for t, w, c in samples if start <= t <= end]
    polled = Counter(w for w, _ in counted)
    assert all(polled[t.worker_id] >= COUNTED_INTERVALS for t in workers), "a worker missed an interval"
    ideal = COUNTED_INTERVALS * len(REGIONS) * -(-PER_REGION // 100)
    made = after["DescribeInstanceStatus"] - before["DescribeInstanceStatus"]
    assert made <= ideal * 1.1, f"{made} DescribeInstanceStatus calls in {COUNTED_INTERVALS} intervals (ideal {ideal})"
    # one replica per region: shared, and with whole batches (the third replica stands by)
    assert len({c for _, c in counted}) == len(REGIONS), "the regions are not spread over the replicas"
