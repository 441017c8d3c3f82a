"""From a worker event to metric samples, against real nats-server and moto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext

from cml.monitor.v1 import worker_pb2
from cmlmon_core import subjects
from cmlmon_core.topology import POLLS_STREAM
from collector.domain.schedule import schedule_expression
from tests.integration.collector.conftest import (
    INTERVAL,
    RunningCollector,
    SampleWatch,
    launch,
    publish_event,
    put_metrics,
    worker,
)

REGION = "us-east-1"


async def test_created_worker_is_scheduled_and_sampled_with_cpu_memory_and_network(
        js: JetStreamContext, aws_endpoint: str, collector: RunningCollector, watch: SampleWatch, uid: str) -> None:
    (instance_id,) = launch(aws_endpoint, REGION)
    put_metrics(aws_endpoint, REGION, instance_id, cpu=93.5, memory=41.0, network_bytes=(600_000, 30_000))
    w = worker(uid, REGION, instance_id, monitoring_mode=worker_pb2.MONITORING_MODE_DETAILED)
    before = datetime.now(UTC) - timedelta(seconds=1)
    await publish_event(js, w, "created")
    try:
        sample = await watch.wait_for(lambda s: s.worker_id == w.id and s.HasField("cpu_utilization"))
        assert sample.cpu_utilization == 93.5
        assert sample.memory_utilization == 41.0
        # detailed monitoring: a 60 s period, so the one datapoint's bytes / 60
        assert (sample.network_in_bytes_per_second, sample.network_out_bytes_per_second) == (10_000, 500)
        assert sample.instance_id == instance_id and sample.region == REGION
        assert sample.status == worker_pb2.WORKER_STATUS_RUNNING and sample.ec2_state == "running"
        assert sample.collector_id == "test-collector"
        assert sample.poll_interval_seconds == INTERVAL
        assert not sample.instance_missing
        assert sample.system_status_check == worker_pb2.STATUS_CHECK_OK
        assert sample.instance_status_check == worker_pb2.STATUS_CHECK_OK
        assert sample.monitoring_mode == worker_pb2.MONITORING_MODE_DETAILED
        assert before <= sample.observe_time.ToDatetime(tzinfo=UTC) <= datetime.now(UTC)
        headers = watch.headers[watch.samples.index(sample)]
        assert headers["Nats-Msg-Id"].startswith(f"{w.id}:")  # deduplicated per tick
        schedule = await js.get_last_msg(POLLS_STREAM, subjects.poll_schedule(w.id))
        assert schedule.headers and schedule.headers["Nats-Schedule"] == schedule_expression(INTERVAL)
    finally:
        await publish_event(js, w, "terminated")
