"""Between protobuf messages of the contract and the collector's domain types."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from cml.monitor.v1 import events_pb2, worker_pb2
from collector.domain.model import Monitoring, Observation, Target

_MONITORING = {
    Monitoring.UNKNOWN: worker_pb2.MONITORING_MODE_UNSPECIFIED,
    Monitoring.BASIC: worker_pb2.MONITORING_MODE_BASIC,
    Monitoring.DETAILED: worker_pb2.MONITORING_MODE_DETAILED,
}
_MONITORING_BACK = {v: k for k, v in _MONITORING.items()}


def target_from_worker(worker: worker_pb2.Worker, default_interval: int) -> Target:
    """What a worker's schedule polls; interval 0 means the collector's default."""
    return Target(
        worker_id=worker.id,
        region=worker.region,
        instance_id=worker.instance_id,
        interval_seconds=worker.poll_interval_seconds or default_interval,
        monitoring=_MONITORING_BACK.get(worker.monitoring_mode, Monitoring.UNKNOWN),
        instance_type=worker.instance_type,
        image_id=worker.ami_id,
    )


def tick_from_target(target: Target) -> events_pb2.PollTick:
    return events_pb2.PollTick(
        worker_id=target.worker_id, region=target.region, instance_id=target.instance_id,
        interval_seconds=target.interval_seconds, monitoring_mode=_MONITORING[target.monitoring],
        instance_type=target.instance_type, image_id=target.image_id,
    )


def target_from_tick(tick: events_pb2.PollTick) -> Target:
    return Target(
        worker_id=tick.worker_id, region=tick.region, instance_id=tick.instance_id,
        interval_seconds=tick.interval_seconds,
        monitoring=_MONITORING_BACK.get(tick.monitoring_mode, Monitoring.UNKNOWN),
        instance_type=tick.instance_type, image_id=tick.image_id,
    )


def observe_time(observed_at: datetime) -> Timestamp:
    """A sample's observe_time; a batch's samples share one, converted once."""
    stamp = Timestamp()
    stamp.FromDatetime(observed_at)
    return stamp


def sample_from_observation(obs: Observation, observed_at: datetime | Timestamp, collector_id: str
                            ) -> events_pb2.MetricSample:
    t, s = obs.target, obs.state
    stamp = observed_at if isinstance(observed_at, Timestamp) else observe_time(observed_at)
    sample = events_pb2.MetricSample(
        worker_id=t.worker_id, region=t.region, instance_id=t.instance_id, observe_time=stamp,
        status=s.status, ec2_state=s.ec2_state,
        system_status_check=s.system_check, instance_status_check=s.instance_check,
        monitoring_mode=_MONITORING[t.monitoring], collector_id=collector_id,
        instance_missing=s.missing, poll_interval_seconds=t.interval_seconds,
    )
    if obs.cpu is not None:
        sample.cpu_utilization = obs.cpu
    if obs.memory is not None:
        sample.memory_utilization = obs.memory
    if obs.network_in is not None:
        sample.network_in_bytes_per_second = obs.network_in
    if obs.network_out is not None:
        sample.network_out_bytes_per_second = obs.network_out
    return sample


def is_terminated(worker: worker_pb2.Worker) -> bool:
    return worker.status == worker_pb2.WORKER_STATUS_TERMINATED
