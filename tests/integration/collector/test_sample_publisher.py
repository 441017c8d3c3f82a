"""Samples are sent together and count as stored only once JetStream acknowledged each, against a real
nats-server."""

from __future__ import annotations

from pathlib import Path

import nats

from cml.monitor.v1 import events_pb2
from cmlmon_core.topology import METRICS_STREAM, ensure_topology
from cmlmon_dev.servers import NatsServer
from collector.adapters.publisher import JetStreamSamples, PublishFailed


async def test_a_batch_is_stored_once_per_msg_id_and_fails_where_nothing_stores_it(tmp_path: Path) -> None:
    batch = [(events_pb2.MetricSample(worker_id=f"w-{i}", region="eu-west-1", cpu_utilization=i), f"w-{i}:7")
             for i in range(300)]
    with NatsServer(tmp_path / "js", log_file=tmp_path / "nats.log") as server:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            publisher = JetStreamSamples(js, timeout=5)
            outcomes = await publisher.publish(batch[:3])  # no stream yet: nothing stores them
            assert all(isinstance(o, PublishFailed) for o in outcomes)

            await ensure_topology(js)
            assert await publisher.publish(batch) == [None] * len(batch)
            assert await publisher.publish(batch[:10]) == [None] * 10  # a redelivered tick's sample: deduplicated
            assert (await js.stream_info(METRICS_STREAM)).state.messages == len(batch)
            stored = await js.get_last_msg(METRICS_STREAM, "cml.metrics.eu-west-1.w-299")
            assert stored.headers is not None and stored.headers["Nats-Msg-Id"] == "w-299:7"
        finally:
            await nc.drain()
