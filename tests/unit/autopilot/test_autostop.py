"""Auto-stop decisions per mode: off only notices, dry-run says once what it would do, enforce warns, waits
the grace period (cancelled by any activity) and stops once; never-tag and running labs are respected."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from autopilot.domain.autostop import AutostopPolicy, Decision, Mode, PilotState, decide
from autopilot.domain.idle import IdlePolicy, Observation

T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
IDLE = IdlePolicy(cpu_threshold=5.0, idle_for_seconds=600, network_threshold=50_000)
NET = 2_000.0  # bytes per second: quiet


def policy(mode: Mode) -> AutostopPolicy:
    return AutostopPolicy(mode=mode, grace_seconds=300, idle=IDLE)


def quiet(minute: float) -> Observation:
    return Observation(T0 + timedelta(minutes=minute), 1.0, 0, True, NET)


def play(mode: Mode, observations: list[tuple[Observation, bool]], tags: dict[str, str] | None = None,
         state: PilotState | None = None, settle: bool = True) -> tuple[PilotState, list[tuple[float, str]], float]:
    """Feed (observation, running) pairs, the clock at each observation's time; return the end state, (minute,
    action) pairs and stopped seconds. A stop's claim is settled as the service does after the registry
    answered, unless `settle` is False (the replica died before the call)."""
    state = state or PilotState()
    actions: list[tuple[float, str]] = []
    stopped = 0.0
    for obs, running in observations:
        d: Decision = decide(state, obs, running=running, tags=tags or {}, policy=policy(mode))
        state = d.state
        stopped += d.stopped_seconds
        actions += [((obs.at - T0).total_seconds() / 60, a.kind) for a in d.actions]
        for a in d.actions:
            if a.kind == "stop" and settle:
                assert a.claim is not None and state.stop_claimed_at == a.claim
                state = replace(state, stop_claimed_at=None, stop_settled=a.claim)
    return state, actions, stopped


def quiet_run(until: int) -> list[tuple[Observation, bool]]:
    return [(quiet(m), True) for m in range(0, until + 1)]


def test_off_notices_idleness_once_and_never_stops() -> None:
    _, actions, _ = play("off", quiet_run(60))
    assert actions == [(10, "idle")]


def test_dry_run_says_once_what_it_would_do() -> None:
    _, actions, _ = play("dry-run", quiet_run(60))
    assert actions == [(10, "idle"), (10, "would_stop")]


def test_enforce_warns_then_stops_once_after_the_grace_period() -> None:
    state, actions, _ = play("enforce", quiet_run(44))  # until STOP_RETRY_SECONDS after the stop
    assert actions == [(10, "idle"), (10, "warned"), (15, "stop")]
    assert state.stop_requested_at == quiet(15).at


def test_a_lab_start_in_the_grace_period_cancels_the_stop() -> None:
    lab = (Observation(T0 + timedelta(minutes=12), 1.0, 3, True, NET), True)
    _, actions, _ = play("enforce", [*quiet_run(11), lab, *[(quiet(m), True) for m in range(13, 20)]])
    assert actions == [(10, "idle"), (10, "warned"), (12, "cancelled"), (12, "busy")]


def test_a_cpu_or_network_rise_or_an_unreachable_controller_cancels_too() -> None:
    for busy in (Observation(T0 + timedelta(minutes=12), 40.0, 0, True, NET),
                 Observation(T0 + timedelta(minutes=12), 1.0, 0, True, 800_000.0),
                 Observation(T0 + timedelta(minutes=12), 1.0, None, True, NET)):
        _, actions, _ = play("enforce", [*quiet_run(11), (busy, True), (quiet(16), True)])
        assert actions == [(10, "idle"), (10, "warned"), (12, "cancelled"), (12, "busy")]


def test_a_running_lab_node_blocks_every_mode() -> None:
    busy = [(Observation(T0 + timedelta(minutes=m), 0.5, 1, True, NET), True) for m in range(0, 120)]
    for mode in ("off", "dry-run", "enforce"):
        _, actions, _ = play(mode, busy)  # type: ignore[arg-type]
        assert actions == []


def test_never_tag_is_respected() -> None:
    _, actions, _ = play("enforce", quiet_run(60), tags={"cmlmon:autostop": "Never"})
    assert actions == [(10, "idle"), (10, "skipped")]


def test_stopped_time_is_counted_while_stopped_and_ends_when_started_again() -> None:
    state, _, _ = play("enforce", quiet_run(15))
    stopped_obs = [(Observation(T0 + timedelta(minutes=m), None, None, True, NET), False) for m in (20, 30, 90)]
    state, actions, seconds = play("enforce", stopped_obs, state=state)
    assert actions == [] and seconds == 70 * 60  # from the first stopped observation on
    state, _, seconds = play("enforce", [(quiet(100), True)], state=state)
    assert seconds == 0 and state.stopped_since is None and state.stop_requested_at is None


def test_a_worker_stopped_by_someone_else_counts_nothing() -> None:
    _, _, seconds = play("enforce", [(Observation(T0 + timedelta(minutes=m), None, None, True, NET), False)
                                     for m in range(0, 60, 10)])
    assert seconds == 0


def test_schedule_stops_once_per_change_and_waits_for_labs() -> None:
    from autopilot.domain.autostop import follow_schedule
    from autopilot.domain.offhours import parse
    schedule = parse("Mon-Fri 08:00-19:00 UTC")
    closing = datetime(2026, 12, 2, 19, 0, tzinfo=UTC)
    lab = Observation(closing + timedelta(minutes=1), 2.0, 1, True, NET)
    d = follow_schedule(PilotState(), schedule, lab, running=True, mode="enforce")
    assert [a.kind for a in d.actions] == ["schedule_waiting"] and d.state.schedule_handled is None
    d = follow_schedule(d.state, schedule, lab, running=True, mode="enforce")
    assert d.actions == []  # said once
    free = Observation(closing + timedelta(minutes=2), 2.0, 0, True, NET)
    d = follow_schedule(d.state, schedule, free, running=True, mode="enforce")
    assert [a.kind for a in d.actions] == ["scheduled_stop"] and d.state.schedule_handled == closing
    assert d.state.stop_requested_at == free.at
    # started again by hand: left alone until the next scheduled change
    later = Observation(closing + timedelta(hours=2), 30.0, 3, True, NET)
    assert follow_schedule(d.state, schedule, later, running=True, mode="enforce").actions == []
    assert follow_schedule(PilotState(), schedule, free, running=True, mode="off").actions == []
    dry = follow_schedule(PilotState(), schedule, free, running=True, mode="dry-run")
    assert [a.kind for a in dry.actions] == ["scheduled_stop"] and dry.state.stop_requested_at is None


def test_the_idle_notice_is_resolved_when_the_worker_is_busy_again() -> None:
    busy = (Observation(T0 + timedelta(minutes=20), 60.0, 0, True, NET), True)
    _, actions, _ = play("off", [*quiet_run(15), busy, (quiet(21), True)])
    assert actions == [(10, "idle"), (20, "busy")]


def test_a_stop_accepted_that_did_not_happen_is_asked_again_after_a_while() -> None:
    # the registry accepted the stop of minute 15, but the worker still runs idle
    state, actions, _ = play("enforce", quiet_run(44))
    assert actions == [(10, "idle"), (10, "warned"), (15, "stop")]
    state, actions, _ = play("enforce", [(quiet(m), True) for m in range(45, 80)], state=state)
    assert actions == [(45, "stop"), (75, "stop")]
    assert state.stop_requested_at == quiet(75).at


def test_a_stop_claimed_by_a_replica_that_died_is_finished_once_the_claim_expires() -> None:
    state, actions, _ = play("enforce", quiet_run(15), settle=False)  # claimed at 15; no registry call followed
    assert actions[-1] == (15, "stop") and state.stop_claimed_at == quiet(15).at
    # the claim is two minutes old at minute 17 (claim_seconds): the next replica asks for the stop again, once
    state, actions, _ = play("enforce", [(quiet(m), True) for m in range(16, 44)], state=state)
    assert actions == [(17, "stop")]
    assert state.stop_claimed_at is None and state.stop_settled == quiet(17).at


def test_a_claim_left_by_a_dead_replica_is_dropped_when_the_worker_is_in_use_again() -> None:
    state, _, _ = play("enforce", quiet_run(15), settle=False)
    lab = (Observation(T0 + timedelta(minutes=18), 1.0, 2, True), True)
    state, actions, _ = play("enforce", [lab, *[(quiet(m), True) for m in range(19, 40)]], state=state)
    # no stop without a new warning and grace period: the idle run starts over at 19
    assert actions == [(18, "busy"), (29, "idle"), (29, "warned"), (34, "stop")]


def test_a_claim_is_dropped_once_the_worker_is_seen_stopped() -> None:
    state, _, _ = play("enforce", quiet_run(15), settle=False)
    down = [(Observation(T0 + timedelta(minutes=m), None, None, True), False) for m in (16, 18)]
    state, actions, _ = play("enforce", down, state=state)
    assert actions == [] and state.stop_claimed_at is None and state.stop_requested_at == quiet(15).at


def test_an_observation_older_than_the_last_one_seen_changes_nothing() -> None:
    dry, _, _ = play("dry-run", quiet_run(12))  # idle, never warned
    for state in (dry, play("enforce", quiet_run(12))[0]):
        for running in (True, False):
            d = decide(state, quiet(5), running=running, tags={}, policy=policy("enforce"))
            assert d.state == state and d.actions == []
