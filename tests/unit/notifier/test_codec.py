"""Times from the wire: a Timestamp outside years 1..9999 is accepted by protobuf's parser but cannot be built
again; the codec treats it as no time, so it never reaches an alert's state."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from cml.monitor.v1 import events_pb2, worker_pb2
from notifier.adapters.codec import alert_to_proto, sample_from_proto, ts_seconds, ts_valid
from notifier.domain.model import AlertState, Phase, Sample


def test_times_a_timestamp_cannot_hold_are_no_time() -> None:
    assert ts_seconds(Timestamp(seconds=1_700_000_000, nanos=500_000_000)) == 1_700_000_000.5
    assert ts_seconds(Timestamp()) is None
    for bad in (Timestamp(seconds=10**15), Timestamp(seconds=-(10**15)), Timestamp(seconds=1, nanos=-5),
                Timestamp(seconds=1, nanos=2_000_000_000)):
        assert not ts_valid(bad) and ts_seconds(bad) is None


def test_every_field_of_a_sample_lands_where_the_rules_read_it() -> None:
    msg = events_pb2.MetricSample(
        worker_id="w-1", region="eu-west-1", instance_id="i-01", observe_time=Timestamp(seconds=1_700_000_000),
        status=worker_pb2.WORKER_STATUS_STOPPING, cpu_utilization=12.5, memory_utilization=67.5,
        system_status_check=worker_pb2.STATUS_CHECK_IMPAIRED, instance_status_check=worker_pb2.STATUS_CHECK_OK,
        instance_missing=True, poll_interval_seconds=30)
    assert sample_from_proto(msg, received_at=5.0) == Sample(
        worker_id="w-1", region="eu-west-1", instance_id="i-01", at=1_700_000_000.0,
        status=worker_pb2.WORKER_STATUS_STOPPING, cpu=12.5, memory=67.5, system_check=worker_pb2.STATUS_CHECK_IMPAIRED,
        instance_check=worker_pb2.STATUS_CHECK_OK, instance_missing=True, poll_interval_seconds=30)
    unset = sample_from_proto(events_pb2.MetricSample(worker_id="w-1"), received_at=5.0)
    assert (unset.at, unset.cpu, unset.memory) == (5.0, None, None)  # no data is None, never 0


def test_a_sample_from_far_future_is_dated_when_received() -> None:
    msg = events_pb2.MetricSample(worker_id="w-1", observe_time=Timestamp(seconds=10**15), cpu_utilization=99.0)
    sample = sample_from_proto(msg, received_at=1_700_000_000.0)
    assert sample.at == 1_700_000_000.0
    state = AlertState(worker_id="w-1", rule="cpu_high", phase=Phase.FIRING, start_time=sample.at)
    assert alert_to_proto(state, firing=True).start_time.seconds == 1_700_000_000
