"""Idle detection: quiet observations (CPU and network under their thresholds, no running lab node) for the
whole period make a worker idle; anything else, missing data included, ends the run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from autopilot.domain.idle import IdlePolicy, IdleState, Observation, idle_seconds, is_idle, is_quiet, observe
from autopilot.domain.prices import SHIPPED_PRICES, cost, price_table

T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
POLICY = IdlePolicy(cpu_threshold=5.0, idle_for_seconds=7200, network_threshold=50_000)
NET = 2_000.0  # bytes per second in + out: quiet


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run(observations: list[Observation]) -> IdleState:
    state = IdleState()
    for obs in observations:
        state = observe(state, obs, POLICY)
    return state


@pytest.mark.parametrize(("cpu", "nodes", "controller", "quiet"), [
    (1.0, None, False, True),  # no controller: CPU alone decides
    (4.99, 0, True, True),
    (5.0, 0, True, False),  # at the threshold is not below it
    (80.0, 0, True, False),
    (None, 0, True, False),  # no CPU datapoint is not idleness
    (None, None, False, False),
    (1.0, 2, True, False),  # a running lab node
    (1.0, None, True, False),  # controller configured but unreachable: not "no lab"
])
def test_quiet(cpu: float | None, nodes: int | None, controller: bool, quiet: bool) -> None:
    assert is_quiet(Observation(T0, cpu, nodes, controller, NET), POLICY) is quiet


@pytest.mark.parametrize(("network", "quiet"), [
    (0.0, True),
    (49_999.0, True),
    (50_000.0, False),  # at the threshold is not below it
    (2_000_000.0, False),  # low CPU but traffic: someone is using it
    (None, False),  # no network datapoint is not idleness
])
def test_network_traffic_must_be_under_its_threshold(network: float | None, quiet: bool) -> None:
    for nodes, controller in ((0, True), (None, False)):
        assert is_quiet(Observation(T0, 1.0, nodes, controller, network), POLICY) is quiet


def test_idle_after_the_whole_period_only() -> None:
    obs = [Observation(at(m), 1.0, 0, True, NET) for m in range(0, 121, 10)]
    assert not is_idle(run(obs[:-1]), POLICY)  # 110 minutes
    state = run(obs)
    assert is_idle(state, POLICY) and idle_seconds(state) == 7200


def test_a_new_worker_without_data_is_not_idle() -> None:
    state = run([Observation(at(m), None, None, False, NET) for m in range(0, 300, 10)])
    assert state.idle_since is None and not is_idle(state, POLICY)


@pytest.mark.parametrize("breaking", [
    Observation(at(60), 50.0, 0, True, NET),
    Observation(at(60), 1.0, 1, True, NET),
    Observation(at(60), None, 0, True, NET),
    Observation(at(60), 1.0, None, True, NET),
    Observation(at(60), 1.0, 0, True, 500_000.0),
    Observation(at(60), 1.0, 0, True, None),
])
def test_one_busy_or_unknown_observation_restarts_the_run(breaking: Observation) -> None:
    quiet = [Observation(at(m), 1.0, 0, True, NET) for m in range(0, 60, 10)]
    after = [Observation(at(m), 1.0, 0, True, NET) for m in range(70, 181, 10)]
    state = run([*quiet, breaking, *after])
    assert state.idle_since == at(70)
    assert not is_idle(state, POLICY)  # 110 minutes since the break


def test_an_older_observation_changes_nothing() -> None:
    state = run([Observation(at(0), 1.0, 0, True, NET), Observation(at(130), 1.0, 0, True, NET)])
    assert observe(state, Observation(at(50), 90.0, 3, True, NET), POLICY) == state


def test_cost_from_the_table_and_unknown_types() -> None:
    assert cost(SHIPPED_PRICES, "c5.metal", 7200) == round(2 * SHIPPED_PRICES["c5.metal"], 2)
    assert cost(SHIPPED_PRICES, "x9.unknown", 7200) is None
    table = price_table({"c5.metal": 1.5, "x9.unknown": 2.0})
    assert cost(table, "c5.metal", 3600) == 1.5 and cost(table, "x9.unknown", 1800) == 1.0
    with pytest.raises(ValueError, match="negative"):
        price_table({"c5.metal": -1})
