from __future__ import annotations

import pytest

from cml.monitor.v1 import events_pb2, worker_pb2
from registry.domain import model

E = events_pb2
W = worker_pb2


def worker(status: int = W.WORKER_STATUS_RUNNING, requested: int = 0, last_seen: int = 0) -> W.Worker:
    w = W.Worker(id="w-1", region="us-east-1", instance_id="i-0123456789abcdef0", status=status,  # type: ignore[arg-type]
                 requested_status=requested)  # type: ignore[arg-type]
    if last_seen:
        w.last_seen_time.seconds = last_seen
    return w


def sample(at: int, status: int = 0, missing: bool = False, **fields: object) -> E.MetricSample:
    s = E.MetricSample(worker_id="w-1", region="us-east-1", instance_id="i-0123456789abcdef0",
                       status=status, instance_missing=missing, **fields)  # type: ignore[arg-type]
    s.observe_time.seconds = at
    return s


def test_the_samples_status_is_trusted_and_its_raw_ec2_state_is_not_mapped_again() -> None:
    # The collector maps EC2's words; a sample saying STOPPED while its raw ec2_state says "running" is STOPPED.
    change = model.apply_sample(worker(), sample(10, W.WORKER_STATUS_STOPPED, ec2_state="running"), 300)
    assert change is not None and change.worker.status == W.WORKER_STATUS_STOPPED


def test_a_sample_without_a_status_keeps_the_workers_status_and_applies_the_rest() -> None:
    # UNSPECIFIED: an EC2 state the collector does not know (or a sample without the field): nothing is guessed
    # from ec2_state, but the observation still counts.
    s = sample(10, W.WORKER_STATUS_UNSPECIFIED, ec2_state="stopped", cpu_utilization=42.0,
               system_status_check=W.STATUS_CHECK_OK)
    change = model.apply_sample(worker(), s, 300)
    assert change is not None and not change.has_event
    assert change.worker.status == W.WORKER_STATUS_RUNNING
    assert change.worker.cpu_utilization == 42.0 and change.worker.system_status_check == W.STATUS_CHECK_OK
    assert change.worker.last_seen_time.seconds == 10


def test_same_status_makes_no_event_but_updates_metrics() -> None:
    change = model.apply_sample(worker(), sample(10, W.WORKER_STATUS_RUNNING, cpu_utilization=55.0), 300)
    assert change is not None and not change.has_event
    assert change.worker.cpu_utilization == 55.0 and change.worker.last_seen_time.seconds == 10


def test_no_data_clears_old_metric() -> None:
    old = worker()
    old.cpu_utilization = 99.0
    change = model.apply_sample(old, sample(10, W.WORKER_STATUS_RUNNING), 300)
    assert change is not None and not change.worker.HasField("cpu_utilization")


def test_status_change_is_an_event_and_unrequested_unless_asked() -> None:
    change = model.apply_sample(worker(), sample(10, W.WORKER_STATUS_STOPPED), 300)
    assert change is not None and change.event_type == E.WORKER_EVENT_TYPE_STATUS_CHANGED
    assert change.previous_status == W.WORKER_STATUS_RUNNING and not change.requested
    asked = model.apply_sample(worker(W.WORKER_STATUS_STOPPING, requested=W.WORKER_STATUS_STOPPED),
                               sample(10, W.WORKER_STATUS_STOPPED), 300)
    assert asked is not None and asked.requested


def test_terminated_is_terminal_and_announced_once() -> None:
    change = model.apply_sample(worker(), sample(10, W.WORKER_STATUS_TERMINATED), 300)
    assert change is not None and change.event_type == E.WORKER_EVENT_TYPE_TERMINATED
    assert model.apply_sample(change.worker, sample(20, W.WORKER_STATUS_RUNNING), 300) is None


def test_stale_and_foreign_samples_are_ignored() -> None:
    assert model.apply_sample(worker(last_seen=50), sample(40, W.WORKER_STATUS_STOPPED), 300) is None
    foreign = sample(60, W.WORKER_STATUS_STOPPED)
    foreign.instance_id = "i-00000000"
    assert model.apply_sample(worker(), foreign, 300) is None


def test_missing_instance_terminates_only_after_grace() -> None:
    first = model.apply_sample(worker(), sample(100, W.WORKER_STATUS_TERMINATED, missing=True), 300)
    assert first is not None and not first.has_event and first.worker.missing_since_time.seconds == 100
    still = model.apply_sample(first.worker, sample(399, W.WORKER_STATUS_TERMINATED, missing=True), 300)
    assert still is not None and still.worker.status == W.WORKER_STATUS_RUNNING
    gone = model.apply_sample(still.worker, sample(400, W.WORKER_STATUS_TERMINATED, missing=True), 300)
    assert gone is not None and gone.event_type == E.WORKER_EVENT_TYPE_TERMINATED


def test_instance_seen_again_resets_grace() -> None:
    first = model.apply_sample(worker(), sample(100, missing=True), 300)
    assert first is not None
    back = model.apply_sample(first.worker, sample(200, W.WORKER_STATUS_RUNNING), 300)
    assert back is not None and not back.worker.HasField("missing_since_time")


@pytest.mark.parametrize(("status", "start", "stop", "terminate"), [
    (W.WORKER_STATUS_PENDING, False, True, True),
    (W.WORKER_STATUS_RUNNING, False, True, True),
    (W.WORKER_STATUS_STOPPING, None, False, True),
    (W.WORKER_STATUS_STOPPED, True, False, True),
    (W.WORKER_STATUS_SHUTTING_DOWN, None, None, False),
    (W.WORKER_STATUS_TERMINATED, None, None, False),
])
def test_transitions(status: int, start: bool | None, stop: bool | None, terminate: bool) -> None:
    for check, expected in ((model.start_needed, start), (model.stop_needed, stop)):
        if expected is None:
            with pytest.raises(model.TransitionRefused):
                check(status)  # type: ignore[arg-type]
        else:
            assert check(status) is expected  # type: ignore[arg-type]
    assert model.terminate_needed(status) is terminate  # type: ignore[arg-type]


def test_ids_and_tokens_are_deterministic_per_request() -> None:
    assert model.created_worker_id("a") == model.created_worker_id("a") != model.created_worker_id("b")
    assert len(model.client_token("x" * 500)) <= 64
    assert model.imported_worker_id() != model.imported_worker_id()


def test_ec2s_reason_is_asked_for_when_a_worker_leaves_the_way_it_was_asked_for() -> None:
    starting = worker(W.WORKER_STATUS_PENDING, requested=W.WORKER_STATUS_RUNNING)
    assert model.leaves_requested_path(starting, sample(10, W.WORKER_STATUS_STOPPED))
    assert not model.leaves_requested_path(starting, sample(10, W.WORKER_STATUS_RUNNING))  # got there
    assert not model.leaves_requested_path(starting, sample(10, W.WORKER_STATUS_PENDING))  # no change
    assert not model.leaves_requested_path(starting, sample(10))  # a status the collector could not map
    assert not model.leaves_requested_path(worker(W.WORKER_STATUS_RUNNING), sample(10, W.WORKER_STATUS_STOPPED))
    change = model.apply_sample(starting, sample(10, W.WORKER_STATUS_STOPPED), 300,
                                "Server.InsufficientInstanceCapacity: Insufficient capacity.")
    assert change is not None and change.worker.state_reason.startswith("Server.InsufficientInstanceCapacity")
    later = model.apply_sample(change.worker, sample(20, W.WORKER_STATUS_STOPPED, cpu_utilization=1.0), 300)
    assert later is not None and later.worker.state_reason == change.worker.state_reason  # no change: kept
    back = model.apply_sample(later.worker, sample(30, W.WORKER_STATUS_PENDING), 300)
    assert back is not None and back.worker.state_reason == ""  # a later change without a reason clears it


def probe(at: int, healthy: bool = True, running_nodes: int = 0) -> W.CmlController:
    c = W.CmlController(url="https://10.0.1.23", reachable=True, version="2.8.0", healthy=healthy,
                        licence_registration="COMPLETED", licence_authorization="IN_COMPLIANCE", labs=1,
                        running_nodes=running_nodes)
    c.probe_time.seconds = at
    return c


def test_a_controller_probe_is_recorded_and_an_older_one_changes_nothing() -> None:
    first = model.set_controller(worker(), probe(100))
    assert first is not None and not first.has_event and first.worker.controller == probe(100)
    newer = model.set_controller(first.worker, probe(200, healthy=False))
    assert newer is not None and newer.worker.controller.healthy is False
    assert model.set_controller(newer.worker, probe(150, running_nodes=3)) is None  # late, from another replica
    assert model.set_controller(worker(W.WORKER_STATUS_TERMINATED), probe(300)) is None
