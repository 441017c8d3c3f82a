from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from cml.monitor.v1 import worker_pb2
from collector.codec import sample_from_observation, target_from_tick, target_from_worker, tick_from_target
from collector.domain import ec2_status
from collector.domain.model import InstanceState, Monitoring, Observation, Target
from collector.settings import CollectorSettings


def test_defaults_and_contract_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_METRICS_POLL_INTERVAL", "10")
    monkeypatch.setenv("CLOUDWATCH_DELAY_SECONDS", "0")
    monkeypatch.setenv("CWAGENT_MEMORY_DIMENSIONS", "InstanceId, ImageId,InstanceType")
    s = CollectorSettings()
    assert s.metrics_port == 9102 and s.registry_address == "127.0.0.1:50051"
    assert s.worker_metrics_poll_interval == 10 and s.cloudwatch_delay_seconds == 0
    assert s.memory_dimensions == ("InstanceId", "ImageId", "InstanceType")


@pytest.mark.parametrize("bad", ["", "InstanceId,AutoScalingGroupName", "instanceid"])
def test_unknown_memory_dimensions_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        CollectorSettings(cwagent_memory_dimensions=bad)


def test_a_region_lease_not_shorter_than_ack_wait_is_refused() -> None:
    CollectorSettings(tick_ack_wait_seconds=6, tick_region_lease_seconds=2)
    with pytest.raises(ValidationError, match="TICK_REGION_LEASE_SECONDS"):
        CollectorSettings(tick_ack_wait_seconds=10, tick_region_lease_seconds=10)
    assert CollectorSettings(tick_ack_wait_seconds=9).region_lease_seconds == 3  # unset: follows AckWait


def test_worker_with_interval_zero_gets_the_default_and_round_trips_through_a_tick() -> None:
    w = worker_pb2.Worker(id="w-1", region="eu-west-1", instance_id="i-12345678", instance_type="c5.metal",
                          ami_id="ami-12345678", monitoring_mode=worker_pb2.MONITORING_MODE_DETAILED)
    t = target_from_worker(w, default_interval=300)
    assert t == Target(worker_id="w-1", region="eu-west-1", instance_id="i-12345678", interval_seconds=300,
                       monitoring=Monitoring.DETAILED, instance_type="c5.metal", image_id="ami-12345678")
    assert target_from_tick(tick_from_target(t)) == t
    w.poll_interval_seconds = 30
    assert target_from_worker(w, default_interval=300).interval_seconds == 30


def test_sample_carries_every_field_and_leaves_unknown_metrics_absent() -> None:
    t = Target(worker_id="w-1", region="eu-west-1", instance_id="i-12345678", interval_seconds=60,
               monitoring=Monitoring.BASIC)
    state = InstanceState("i-12345678", worker_pb2.WORKER_STATUS_RUNNING, "running", worker_pb2.STATUS_CHECK_OK,
                          worker_pb2.STATUS_CHECK_IMPAIRED)
    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    s = sample_from_observation(Observation(t, state, cpu=12.5, memory=None, network_in=0.0), at, "replica-a")
    assert (s.worker_id, s.region, s.instance_id, s.collector_id) == ("w-1", "eu-west-1", "i-12345678", "replica-a")
    assert s.observe_time.ToDatetime(tzinfo=UTC) == at
    assert s.status == worker_pb2.WORKER_STATUS_RUNNING and s.ec2_state == "running"
    assert s.system_status_check == worker_pb2.STATUS_CHECK_OK
    assert s.instance_status_check == worker_pb2.STATUS_CHECK_IMPAIRED
    assert s.monitoring_mode == worker_pb2.MONITORING_MODE_BASIC and s.poll_interval_seconds == 60
    assert s.HasField("cpu_utilization") and s.cpu_utilization == 12.5
    assert not s.HasField("memory_utilization")
    assert s.HasField("network_in_bytes_per_second") and s.network_in_bytes_per_second == 0.0  # 0 is data
    assert not s.HasField("network_out_bytes_per_second")
    assert not s.instance_missing


def test_missing_instance_sample() -> None:
    t = Target(worker_id="w-1", region="eu-west-1", instance_id="i-12345678")
    s = sample_from_observation(Observation(t, ec2_status.missing("i-12345678")), datetime.now(UTC), "r")
    assert s.instance_missing and s.status == worker_pb2.WORKER_STATUS_TERMINATED and s.ec2_state == ""
    assert not s.HasField("cpu_utilization")
