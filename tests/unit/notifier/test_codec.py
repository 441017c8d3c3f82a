"""Times from the wire: a Timestamp outside years 1..9999 is accepted by protobuf's parser but cannot be built
again; the codec treats it as no time, so it never reaches an alert's state."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from cml.monitor.v1 import events_pb2
from notifier.adapters.codec import alert_to_proto, sample_from_proto, ts_seconds, ts_valid
from notifier.domain.model import AlertState, Phase


def test_times_a_timestamp_cannot_hold_are_no_time() -> None:
    assert ts_seconds(Timestamp(seconds=1_700_000_000, nanos=500_000_000)) == 1_700_000_000.5
    assert ts_seconds(Timestamp()) is None
    for bad in (Timestamp(seconds=10**15), Timestamp(seconds=-(10**15)), Timestamp(seconds=1, nanos=-5),
                Timestamp(seconds=1, nanos=2_000_000_000)):
        assert not ts_valid(bad) and ts_seconds(bad) is None


def test_a_sample_from_far_future_is_dated_when_received() -> None:
    msg = events_pb2.MetricSample(worker_id="w-1", observe_time=Timestamp(seconds=10**15), cpu_utilization=99.0)
    sample = sample_from_proto(msg, received_at=1_700_000_000.0)
    assert sample.at == 1_700_000_000.0
    state = AlertState(worker_id="w-1", rule="cpu_high", phase=Phase.FIRING, start_time=sample.at)
    assert alert_to_proto(state, firing=True).start_time.seconds == 1_700_000_000
