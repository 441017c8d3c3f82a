from __future__ import annotations

import pytest
from nats.js import JetStreamContext

from cmlmon_core import topology

pytestmark = pytest.mark.integration


async def test_topology_is_idempotent_and_complete(js: JetStreamContext) -> None:
    await topology.ensure_topology(js)  # second time (the fixture made the first): must not fail
    for name in (topology.WORKERS_STREAM, topology.POLLS_STREAM, topology.METRICS_STREAM, topology.ALERTS_STREAM,
                 topology.AUTOPILOT_STREAM):
        info = await js.stream_info(name)
        assert info.config.name == name
    polls = await js.stream_info(topology.POLLS_STREAM)
    assert polls.config.max_msgs_per_subject == 1
    assert polls.config.allow_msg_schedules is True
    for bucket in (topology.WORKERS_BUCKET, topology.ALERTS_BUCKET, topology.AUTOPILOT_BUCKET,
                   topology.HISTORY_BUCKET):
        kv = await js.key_value(bucket)
        assert (await kv.status()).bucket == bucket


async def test_existing_stream_with_other_config_is_kept(js: JetStreamContext) -> None:
    opts = topology.TopologyOptions(metrics_max_age_seconds=3600)
    await topology.ensure_topology(js, opts)  # differs from the existing one: logged, not raised
    info = await js.stream_info(topology.METRICS_STREAM)
    assert info.config.max_age == 86_400
