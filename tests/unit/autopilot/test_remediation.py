"""Remediation decisions: a status check impaired long enough is rebooted (instance check) or stopped and started
(system check, EBS-backed only), once per period; not recovering, impaired again within the period, or not
EBS-backed is escalated and left alone; ok checks end the episode; dry-run only says what it would do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from autopilot.adapters.state_kv import from_json, to_json
from autopilot.domain.autostop import PilotState
from autopilot.domain.remediation import (
    Check,
    CheckObservation,
    Mode,
    Power,
    RemediationPolicy,
    RemediationState,
    failed,
    remediate,
)

T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
# impaired 5 min -> act; 10 min to recover; one remediation per hour
POLICY = RemediationPolicy(mode="enforce", impaired_for_seconds=300, recover_within_seconds=600,
                           period_seconds=3600)


def obs(minute: float, system: Check = "ok", instance: Check = "ok", power: Power = "running",
        ebs: bool | None = True) -> CheckObservation:
    return CheckObservation(T0 + timedelta(minutes=minute), power, system, instance, ebs)


def play(observations: list[CheckObservation], mode: Mode = "enforce",
         state: RemediationState | None = None) -> tuple[RemediationState, list[tuple[float, str]]]:
    state = state or RemediationState()
    policy = RemediationPolicy(mode, POLICY.impaired_for_seconds, POLICY.recover_within_seconds,
                               POLICY.period_seconds)
    actions: list[tuple[float, str]] = []
    for o in observations:
        d = remediate(state, o, policy)
        state = d.state
        actions += [((o.at - T0).total_seconds() / 60, a.kind) for a in d.actions]
    return state, actions


def impaired(first: int, last: int, check: str = "instance", **kw: object) -> list[CheckObservation]:
    return [obs(m, **{check: "impaired"}, **kw) for m in range(first, last + 1)]  # type: ignore[arg-type]


def test_an_instance_check_impaired_long_enough_is_rebooted_once_then_recovers() -> None:
    state, actions = play([*impaired(0, 8), obs(9, instance="unknown"), obs(10)])
    assert actions == [(5, "reboot"), (10, "recovered")]
    assert state.acted_at == T0 + timedelta(minutes=5) and state.remedy is None and state.impaired_since is None


def test_a_short_impairment_does_nothing() -> None:
    assert play([*impaired(0, 4), obs(5), *impaired(6, 10)])[1] == []


def test_a_system_check_is_stopped_then_started_once_stopped() -> None:
    seq = [*impaired(0, 5, "system"), obs(6, "impaired", power="moving"), obs(7, "unknown", "unknown", "stopped"),
           obs(8, "unknown", "unknown", "stopped"), obs(9, "unknown", "unknown", "moving"),
           obs(10, "unknown", "unknown"), obs(11)]
    assert play(seq)[1] == [(5, "stop"), (7, "start"), (11, "recovered")]


@pytest.mark.parametrize("ebs", [False, None])
def test_a_system_check_on_an_instance_not_known_to_be_ebs_backed_is_escalated(ebs: bool | None) -> None:
    state, actions = play(impaired(0, 20, "system", ebs=ebs))
    assert actions == [(5, "escalated")] and state.remedy is None and state.acted_at is None


def test_no_recovery_within_the_time_is_escalated_once_and_left_alone() -> None:
    state, actions = play(impaired(0, 40))
    assert actions == [(5, "reboot"), (15, "escalated")]
    assert play([obs(41)], state=state)[1] == [(41, "recovered")]


def test_impaired_again_within_the_period_is_escalated_not_remediated_again() -> None:
    first = [*impaired(0, 5), obs(6)]
    _, actions = play([*first, *impaired(10, 20)])
    assert actions == [(5, "reboot"), (6, "recovered"), (15, "escalated")]
    later = impaired(70, 80)  # past the hour since the reboot at minute 5: remediated again
    assert play(later, state=play(first)[0])[1] == [(75, "reboot")]


def test_a_stop_that_does_not_complete_is_escalated() -> None:
    seq = [*impaired(0, 5, "system"), *[obs(m, "impaired", power="moving") for m in range(6, 20)]]
    state, actions = play(seq)
    assert actions == [(5, "stop"), (15, "escalated")] and not state.start_pending


def test_a_worker_stopped_by_someone_ends_the_episode() -> None:
    assert play([*impaired(0, 5), obs(6, "unknown", "unknown", "stopped")])[1] == [(5, "reboot"), (6, "ended")]


def test_dry_run_says_once_per_episode_what_it_would_do() -> None:
    state, actions = play([*impaired(0, 20), obs(21), *impaired(30, 36, "system")], mode="dry-run")
    assert actions == [(5, "would_reboot"), (21, "recovered"), (35, "would_stop_start")]
    assert state.acted_at is None and state.remedy is None


def test_off_does_nothing_and_old_observations_change_nothing() -> None:
    assert play(impaired(0, 30), mode="off") == (RemediationState(), [])
    state, _ = play(impaired(0, 3))
    assert remediate(state, obs(1, instance="impaired"), POLICY).state == state


def test_a_refused_call_escalates() -> None:
    state, _ = play(impaired(0, 5, "system"))
    got = failed(state, "StopWorker refused")
    assert [a.kind for a in got.actions] == ["escalated"] and got.state.escalated and not got.state.start_pending
    assert play(impaired(6, 60, "system"), state=got.state)[1] == []


def test_the_state_survives_its_kv_encoding() -> None:
    state, _ = play(impaired(0, 5, "system"))
    assert state.start_pending and state.remedy == "stop_start"
    kept = from_json(to_json(PilotState(remediation=state)))
    assert kept.remediation == state


def test_remediation_is_off_by_default() -> None:
    from autopilot.bootstrap import remediation_policy
    from autopilot.settings import AutopilotSettings
    assert remediation_policy(AutopilotSettings()).mode == "off"


def test_a_refused_start_is_asked_again_on_the_next_stopped_observation() -> None:
    from autopilot.domain.remediation import start_refused
    state, actions = play([*impaired(0, 5, "system"), obs(6, "unknown", "unknown", "stopped")])
    assert actions == [(5, "stop"), (6, "start")] and not state.start_pending
    again = start_refused(state).state
    assert play([obs(7, "unknown", "unknown", "stopped")], state=again)[1] == [(7, "start")]
    assert play([obs(m, "unknown", "unknown", "stopped") for m in range(7, 30)], state=state)[1] == [(15, "escalated")]
