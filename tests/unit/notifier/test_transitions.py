"""stuck_transition: when a requested transition counts as stuck, per instance type, size or family."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cml.monitor.v1 import worker_pb2 as W
from notifier.domain.model import WorkerRef
from notifier.domain.transitions import StuckPolicy, is_stuck, parse_overrides, stuck_summary

POLICY = StuckPolicy(600.0, parse_overrides("metal=1800, p4d=900, c5.24xlarge=1200"))


def _worker(instance_type: str = "c5.large", status: W.WorkerStatus = W.WORKER_STATUS_STOPPED,
            requested: W.WorkerStatus = W.WORKER_STATUS_RUNNING, at: float | None = 1000.0) -> WorkerRef:
    return WorkerRef(worker_id="w1", name="cml-1", instance_id="i-0abc", instance_type=instance_type, status=status,
                     requested_status=requested, requested_at=at)


@pytest.mark.parametrize(("instance_type", "seconds"), [
    ("c5.large", 600.0), ("c5.metal", 1800.0), ("m7i.metal-24xl", 600.0), ("p4d.24xlarge", 900.0),
    ("c5.24xlarge", 1200.0), ("", 600.0)])
def test_timeout_by_type_then_size_then_family(instance_type: str, seconds: float) -> None:
    assert POLICY.timeout(instance_type) == seconds


def test_stuck_only_past_the_timeout_and_only_while_not_there() -> None:
    assert not is_stuck(_worker(), 1600.0, POLICY)
    assert is_stuck(_worker(), 1600.1, POLICY)
    assert not is_stuck(_worker("c5.metal"), 1600.1, POLICY)
    assert is_stuck(_worker("c5.metal", status=W.WORKER_STATUS_PENDING), 2800.1, POLICY)
    assert not is_stuck(_worker(status=W.WORKER_STATUS_RUNNING), 9999.0, POLICY)
    assert not is_stuck(_worker(status=W.WORKER_STATUS_TERMINATED), 9999.0, POLICY)
    assert not is_stuck(_worker(requested=W.WORKER_STATUS_UNSPECIFIED), 9999.0, POLICY)
    assert not is_stuck(_worker(at=None), 9999.0, POLICY)
    assert is_stuck(_worker(status=W.WORKER_STATUS_SHUTTING_DOWN, requested=W.WORKER_STATUS_TERMINATED), 1601.0,
                    POLICY)


def test_summary_says_what_was_asked_and_where_it_is() -> None:
    assert stuck_summary(_worker(), "worker cml-1", 1700.0) == (
        "worker cml-1 was asked to be running 700s ago; EC2 still has it stopped")
    kms = replace(_worker(), state_reason="Client.InternalError: Client error on launch")
    assert stuck_summary(kms, "worker cml-1", 1700.0).endswith("still has it stopped (AWS: Client.InternalError: "
                                                                "Client error on launch)")


@pytest.mark.parametrize("spec", ["metal", "metal=", "=10", "metal=0", "metal=abc", "metal=-5"])
def test_bad_overrides_are_named(spec: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_overrides(spec)
