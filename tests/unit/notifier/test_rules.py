from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cml.monitor.v1 import worker_pb2 as pb
from notifier.domain import rules
from notifier.domain.model import AlertState, FiringPolicy, Phase, Reading, Rule, Sample, TransitionKind, WorkerRef

W = WorkerRef(worker_id="w1", name="cml-1", instance_id="i-0abc", region="us-east-1")


def one(for_seconds: float) -> FiringPolicy:
    """One breaching sample suffices (plus the duration)."""
    return FiringPolicy(for_seconds=for_seconds, min_samples=1, window_samples=1)


def cpu(value: float | None, at: float, threshold: float = 90.0, hysteresis: float = 5.0) -> Reading:
    return rules.threshold_reading(Rule.CPU_HIGH, value, threshold, at, hysteresis, "w")


def run(values: Sequence[float | None], policy: FiringPolicy, step_s: float = 10.0) -> list[tuple[int, str]]:
    state = rules.initial_state(W, Rule.CPU_HIGH)
    out = []
    for i, v in enumerate(values):
        state, t = rules.step(state, cpu(v, i * step_s), policy)
        if t:
            out.append((i, str(t.kind)))
    return out


def test_fires_immediately_with_zero_duration() -> None:
    assert run([50, 95], one(0)) == [(1, "firing")]


def test_equal_to_threshold_is_not_a_breach() -> None:
    assert run([90, 90, 90], one(0)) == []


def test_fires_only_after_holding_for_duration() -> None:
    # samples every 10 s; must hold 20 s: first hot at index 1, fires at index 3
    assert run([50, 95, 95, 95, 95], one(20)) == [(3, "firing")]


def test_a_cool_sample_restarts_the_duration() -> None:
    assert run([95, 95, 50, 95, 95, 95], one(20)) == [(5, "firing")]


def test_m_of_n_fires_despite_one_cool_sample() -> None:
    policy = FiringPolicy(for_seconds=0, min_samples=3, window_samples=4)
    assert run([95, 50, 95, 95], policy) == [(3, "firing")]
    assert run([95, 50, 50, 95, 50], policy) == []


def test_resolves_only_below_threshold_minus_hysteresis() -> None:
    # 88 is under 90 but not under 85: still firing; 84 resolves
    assert run([95, 88, 89, 84], one(0)) == [(0, "firing"), (3, "resolved")]


def test_flapping_around_threshold_fires_once() -> None:
    values = [91, 89, 92, 88, 93, 87, 91]
    assert run(values, one(0)) == [(0, "firing")]


def test_missing_data_never_resolves_nor_fires() -> None:
    assert run([95, None, None, None], one(0)) == [(0, "firing")]
    assert run([None, None], one(0)) == []


def test_missing_data_does_not_break_a_pending_duration() -> None:
    assert run([95, None, 95, 95], one(30)) == [(3, "firing")]


def test_fire_records_value_threshold_and_start() -> None:
    state, t = rules.step(rules.initial_state(W, Rule.CPU_HIGH), cpu(97.5, 100.0), one(0))
    assert t is not None and t.kind is TransitionKind.FIRING
    assert (state.phase, state.value, state.threshold, state.start_time) == (Phase.FIRING, 97.5, 90.0, 100.0)
    assert state.worker_name == "cml-1" and state.instance_id == "i-0abc"
    state, t = rules.step(state, cpu(10, 200.0), one(0))
    assert t is not None and t.kind is TransitionKind.RESOLVED
    assert (state.phase, state.start_time, state.end_time, state.value) == (Phase.INACTIVE, 100.0, 200.0, 10)


def test_default_policy_needs_two_consecutive_breaching_samples() -> None:
    assert run([95, 50, 95, 50, 95, 95, 95], FiringPolicy()) == [(5, "firing")]


def test_policy_rejects_m_greater_than_n() -> None:
    with pytest.raises(ValueError):
        FiringPolicy(min_samples=3, window_samples=2)


@given(st.lists(st.one_of(st.none(), st.floats(0, 100)), max_size=40))
def test_transitions_alternate_and_start_with_firing(values: list[float | None]) -> None:
    kinds = [k for _, k in run(values, FiringPolicy(for_seconds=15, min_samples=2, window_samples=3))]
    assert all(k == ("firing" if i % 2 == 0 else "resolved") for i, k in enumerate(kinds))


def test_threshold_tags_override_the_default() -> None:
    tagged = WorkerRef(worker_id="w", tags={"cmlmon:cpu-threshold": "80", "cmlmon:memory-threshold": "bogus"})
    assert rules.threshold_for(Rule.CPU_HIGH, tagged, 90) == 80
    assert rules.threshold_for(Rule.MEMORY_HIGH, tagged, 90) == 90
    assert rules.threshold_for(Rule.CPU_HIGH, WorkerRef(worker_id="w", tags={"cmlmon:cpu-threshold": "150"}), 90) == 90
    sample = Sample(worker_id="w", region="r", instance_id="i", at=1.0, cpu=85.0, memory=95.0)
    readings = rules.sample_readings(sample, tagged, 90, 90, 5)
    assert readings[Rule.CPU_HIGH].breached is True and readings[Rule.CPU_HIGH].threshold == 80
    assert readings[Rule.MEMORY_HIGH].breached is True


_CHECKS = st.sampled_from(list(pb.StatusCheck.values()))
_PERCENT = st.one_of(st.none(), st.sampled_from([80.0, 90.0, 99.5]), st.floats(0, 100))  # and the thresholds


@given(_PERCENT, _PERCENT, _CHECKS, _CHECKS, st.sampled_from(["", "80", "bogus", "150", "99.5"]))
def test_breaches_nothing_agrees_with_the_readings(cpu: float | None, memory: float | None, system: pb.StatusCheck,
                                                   instance: pb.StatusCheck, tag: str) -> None:
    """The evaluator skips building readings when this says nothing is breached: it must say so exactly when
    no reading is breached."""
    worker = WorkerRef(worker_id="w", tags={"cmlmon:cpu-threshold": tag} if tag else {})
    sample = Sample(worker_id="w", region="r", instance_id="i", at=1.0, cpu=cpu, memory=memory,
                    system_check=system, instance_check=instance)
    readings = rules.sample_readings(sample, worker, 90, 90, 5)
    assert set(readings) == set(rules.SAMPLE_RULES)
    assert rules.breaches_nothing(sample, worker, 90, 90) == (not any(r.breached for r in readings.values()))


@given(st.sampled_from(list(Rule)), st.sampled_from(list(Phase)), st.lists(st.booleans(), max_size=3), _PERCENT,
       _PERCENT, _CHECKS, _CHECKS)
def test_a_state_at_rest_is_left_as_it_is_by_a_sample_breaching_nothing(
        rule: Rule, phase: Phase, window: list[bool], cpu: float | None, memory: float | None,
        system: pb.StatusCheck, instance: pb.StatusCheck) -> None:
    """The evaluator skips a sample that breaches nothing when all the worker's states are at rest: stepping
    them by the sample (or resolving silent/unexpected_stop, as a sample does) must then change nothing."""
    state = AlertState(worker_id="w", rule=rule, phase=phase, window=tuple(window),
                       pending_since=1.0 if phase is Phase.PENDING else None)
    sample = Sample(worker_id="w", region="r", instance_id="i", at=100.0, cpu=cpu, memory=memory,
                    system_check=system, instance_check=instance)
    if not (rules.breaches_nothing(sample, None, 90, 90) and rules.at_rest(state)):
        return
    policy = FiringPolicy(for_seconds=0, min_samples=2, window_samples=3)
    if rule in rules.SAMPLE_RULES:
        assert rules.step(state, rules.sample_readings(sample, W, 90, 90, 5)[rule], policy)[0] is state
    elif rule in (Rule.SILENT, Rule.UNEXPECTED_STOP):  # a sample resolves these; it touches no other rule
        assert rules.resolve(state, sample.at)[0] is state


@pytest.mark.parametrize(("system", "instance", "breached", "cleared"), [
    (pb.STATUS_CHECK_IMPAIRED, pb.STATUS_CHECK_OK, True, False),
    (pb.STATUS_CHECK_OK, pb.STATUS_CHECK_IMPAIRED, True, False),
    (pb.STATUS_CHECK_OK, pb.STATUS_CHECK_OK, False, True),
    (pb.STATUS_CHECK_NOT_APPLICABLE, pb.STATUS_CHECK_NOT_APPLICABLE, False, True),
    (pb.STATUS_CHECK_INITIALIZING, pb.STATUS_CHECK_OK, None, False),
    (pb.STATUS_CHECK_UNSPECIFIED, pb.STATUS_CHECK_UNSPECIFIED, None, False),
    (pb.STATUS_CHECK_INSUFFICIENT_DATA, pb.STATUS_CHECK_OK, None, False),
])
def test_status_check_reading(system: pb.StatusCheck, instance: pb.StatusCheck, breached: bool | None,
                              cleared: bool) -> None:
    sample = Sample(worker_id="w", region="r", instance_id="i", at=1.0, system_check=system, instance_check=instance)
    reading = rules.status_check_reading(sample, "w")
    assert (reading.breached, reading.cleared) == (breached, cleared)


@pytest.mark.parametrize(("previous", "status", "requested", "expected"), [
    (pb.WORKER_STATUS_RUNNING, pb.WORKER_STATUS_STOPPED, False, {Rule.UNEXPECTED_STOP: True, Rule.SILENT: False}),
    (pb.WORKER_STATUS_RUNNING, pb.WORKER_STATUS_STOPPING, False, {Rule.UNEXPECTED_STOP: True, Rule.SILENT: False}),
    (pb.WORKER_STATUS_RUNNING, pb.WORKER_STATUS_STOPPED, True, {Rule.UNEXPECTED_STOP: False, Rule.SILENT: False}),
    (pb.WORKER_STATUS_STOPPING, pb.WORKER_STATUS_STOPPED, False, {Rule.SILENT: False}),
    (pb.WORKER_STATUS_RUNNING, pb.WORKER_STATUS_TERMINATED, False,
     {Rule.UNEXPECTED_TERMINATION: True, Rule.UNEXPECTED_STOP: False, Rule.SILENT: False}),
    (pb.WORKER_STATUS_RUNNING, pb.WORKER_STATUS_TERMINATED, True, {Rule.UNEXPECTED_STOP: False, Rule.SILENT: False}),
    (pb.WORKER_STATUS_STOPPED, pb.WORKER_STATUS_RUNNING, True, {Rule.UNEXPECTED_STOP: False}),
    (pb.WORKER_STATUS_UNSPECIFIED, pb.WORKER_STATUS_RUNNING, True, {Rule.UNEXPECTED_STOP: False}),
])
def test_lifecycle_verdicts(previous: pb.WorkerStatus, status: pb.WorkerStatus, requested: bool,
                            expected: dict[Rule, bool]) -> None:
    worker = WorkerRef(worker_id="w", status=status)
    assert rules.lifecycle_verdicts(previous, worker, requested) == expected


def test_fire_now_is_idempotent_and_resolve_needs_firing() -> None:
    state = rules.initial_state(W, Rule.UNEXPECTED_STOP)
    assert rules.resolve(state, 5.0) == (state, None)
    fired, t = rules.fire_now(state, 1.0, "stopped")
    assert t is not None and fired.phase is Phase.FIRING and fired.summary == "stopped"
    assert rules.fire_now(fired, 2.0, "again") == (fired, None)


def test_silence_detection_counts_intervals() -> None:
    assert not rules.is_silent(last_sample_at=100.0, known_since=0.0, now=129.0, interval=10, intervals=3)
    assert rules.is_silent(last_sample_at=100.0, known_since=0.0, now=131.0, interval=10, intervals=3)
    assert rules.is_silent(last_sample_at=None, known_since=0.0, now=31.0, interval=10, intervals=3)


def test_state_json_round_trip() -> None:
    state = AlertState(worker_id="w", rule="cpu_high", phase=Phase.PENDING, window=(True, False), pending_since=1.5,
                       value=91.0, threshold=90.0, severity="warning")
    assert AlertState.from_json(state.to_json()) == state
    assert AlertState.from_json(b'{"worker_id":"w","rule":"x","future_field":1}').phase is Phase.INACTIVE


def test_severity_overrides() -> None:
    severities = rules.parse_severities(" cpu_high=critical, silent=info ,")
    assert severities[Rule.CPU_HIGH] == "critical" and severities[Rule.SILENT] == "info"
    assert severities[Rule.MEMORY_HIGH] == "warning"
    assert rules.initial_state(W, Rule.CPU_HIGH, severities).severity == "critical"
    assert rules.initial_state(W, Rule.UNEXPECTED_STOP).severity == "critical"
    for bad in ("cpu_high", "cpu=critical", "cpu_high=urgent"):
        with pytest.raises(ValueError, match="expected <rule>="):
            rules.parse_severities(bad)
