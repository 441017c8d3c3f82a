"""The topology on a real 3-node NATS cluster: streams and buckets created at one replica are scaled up in
place when a service asks for three, keeping their messages; other differences are drift, left alone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext

from cmlmon_core import topology
from cmlmon_dev.servers import NatsCluster
from tests.support import eventually

pytestmark = pytest.mark.integration

EVERY_STREAM = [topology.WORKERS_STREAM, topology.POLLS_STREAM, topology.METRICS_STREAM, topology.ALERTS_STREAM,
                topology.DEADLETTER_STREAM, f"KV_{topology.WORKERS_BUCKET}", f"KV_{topology.ALERTS_BUCKET}",
                f"KV_{topology.REGISTRY_BUCKET}"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "cluster", log_dir=tmp_path) as c:
        yield c


@pytest.fixture
async def cluster_js(cluster: NatsCluster) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(servers=cluster.urls)
    try:
        yield nc.jetstream()
    finally:
        await nc.drain()


async def replicas(js: JetStreamContext, stream: str) -> int:
    """Peers holding the stream that are current (the leader and its caught-up followers)."""
    info = await js.stream_info(stream)
    assert info.cluster is not None
    return 1 + sum(1 for r in info.cluster.replicas or [] if r.current)


async def has_replicas(js: JetStreamContext, stream: str, count: int) -> bool:
    return await replicas(js, stream) == count


async def test_a_service_asking_for_three_replicas_scales_r1_streams_and_buckets_up_in_place(
        cluster_js: JetStreamContext) -> None:
    js = cluster_js
    await topology.ensure_topology(js, topology.TopologyOptions(replicas=1))
    assert [await replicas(js, s) for s in EVERY_STREAM] == [1] * len(EVERY_STREAM)
    await js.publish("cml.workers.w1.created", b"kept", headers={"Nats-Msg-Id": "e1"})
    await (await js.key_value(topology.WORKERS_BUCKET)).put("w1", b"state")

    await topology.ensure_topology(js, topology.TopologyOptions(replicas=3))  # the next service to start

    for stream in EVERY_STREAM:
        assert (await js.stream_info(stream)).config.num_replicas == 3, stream
        await eventually(partial(has_replicas, js, stream, 3), timeout=30)  # the new peers catch up
    assert (await js.get_last_msg(topology.WORKERS_STREAM, "cml.workers.w1.created")).data == b"kept"
    assert (await (await js.key_value(topology.WORKERS_BUCKET)).get("w1")).value == b"state"
    polls = (await js.stream_info(topology.POLLS_STREAM)).config
    assert polls.allow_msg_schedules is True  # the update changed the replicas only
    assert polls.max_msgs_per_subject == 1
    await topology.ensure_topology(js, topology.TopologyOptions(replicas=3))  # now the same: a no-op


async def test_other_differences_are_drift_logged_and_kept_while_replicas_still_rise(
        cluster_js: JetStreamContext, caplog: pytest.LogCaptureFixture) -> None:
    js = cluster_js
    await topology.ensure_topology(js, topology.TopologyOptions(replicas=1, metrics_max_age_seconds=3600))

    with caplog.at_level(logging.INFO, logger=topology.__name__):
        await topology.ensure_topology(js, topology.TopologyOptions(replicas=3))
    metrics = (await js.stream_info(topology.METRICS_STREAM)).config
    assert (metrics.num_replicas, metrics.max_age) == (3, 3600)
    drifted = [r.stream for r in caplog.records if "drifted" in r.getMessage()]  # type: ignore[attr-defined]
    # the metric history's TTL is the metrics' max age: both drift, both are kept
    assert sorted(drifted) == sorted([topology.METRICS_STREAM, f"KV_{topology.HISTORY_BUCKET}"])
    history = (await js.stream_info(f"KV_{topology.HISTORY_BUCKET}")).config
    assert (history.num_replicas, history.max_age) == (3, 3600)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=topology.__name__):
        await topology.ensure_topology(js, topology.TopologyOptions(replicas=1, metrics_max_age_seconds=3600))
    assert (await js.stream_info(topology.WORKERS_STREAM)).config.num_replicas == 3  # more than asked: drift,
    await eventually(partial(has_replicas, js, topology.WORKERS_STREAM, 3), timeout=30)  # never scaled down
    assert topology.WORKERS_STREAM in [r.stream for r in caplog.records]  # type: ignore[attr-defined]


async def test_services_starting_together_can_write_as_soon_as_the_topology_is_ensured(
        cluster: NatsCluster) -> None:
    """A peer's creation is answered before the new stream has a leader; ensure_topology must not return
    before, or the first write after start-up finds no responder (the registry died of it at start)."""

    async def start_and_write(i: int) -> None:
        nc = await nats.connect(servers=cluster.urls)
        try:
            js = nc.jetstream()
            await asyncio.sleep(0.05 * i)  # the others' creations are in flight
            await topology.ensure_topology(js, topology.TopologyOptions(replicas=3))
            await (await js.key_value(topology.REGISTRY_BUCKET)).put(f"service-{i}", b"up")
            await js.publish(f"cml.workers.w{i}.created", b"event")
        finally:
            await nc.close()

    await asyncio.gather(*(start_and_write(i) for i in range(4)))
