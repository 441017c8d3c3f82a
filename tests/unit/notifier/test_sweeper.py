from __future__ import annotations

import asyncio

from cml.monitor.v1 import worker_pb2
from notifier import metrics
from notifier.domain.model import SEVERITIES, FiringPolicy, Rule, WorkerRef
from notifier.domain.silences import Silence
from notifier.service.evaluator import Directory, Evaluator, Thresholds
from notifier.service.sweeper import Sweeper
from tests.unit.notifier.fakes import Clock, FakeLastSamples, FakePublisher, FakeStore


def build(clock: Clock) -> tuple[Sweeper, Directory, FakePublisher, FakeLastSamples]:
    store, pub, directory, last = FakeStore(), FakePublisher(), Directory(), FakeLastSamples()
    ev = Evaluator(store, pub, directory, FiringPolicy(), Thresholds(), clock=clock)
    sweeper = Sweeper(ev, last, default_interval=10, silent_intervals=3, period=1, clock=clock)
    return sweeper, directory, pub, last


async def test_silent_only_after_three_intervals_of_this_process_and_of_the_stream() -> None:
    clock = Clock()
    clock.now = 1000.0
    sweeper, directory, pub, last = build(clock)
    # running long before
    directory.learn(WorkerRef(worker_id="w", region="r", status=worker_pb2.WORKER_STATUS_RUNNING), at=0.0)
    directory.learn(WorkerRef(worker_id="stopped", region="r", status=worker_pb2.WORKER_STATUS_STOPPED), at=0.0)
    clock.now = 1029.0
    await sweeper.sweep_once()
    assert not pub.alerts and not last.asked  # within the grace of a fresh start
    last.at["w"] = 1025.0  # another replica got a sample: the stream knows
    clock.now = 1031.0
    await sweeper.sweep_once()
    assert last.asked == ["w"] and not pub.alerts
    clock.now = 1056.0
    await sweeper.sweep_once()
    assert [a.rule for a in pub.alerts] == ["silent"]
    await sweeper.sweep_once()
    assert len(pub.alerts) == 1  # fires once


async def test_a_crashing_sweep_is_logged_and_the_next_one_runs() -> None:
    clock = Clock()
    _, directory, _, last = build(clock)
    evaluator = Evaluator(FakeStore(), FakePublisher(), directory, FiringPolicy(), Thresholds(), clock=clock)
    sweeper = Sweeper(evaluator, last, default_interval=10, silent_intervals=3, period=0.01, clock=clock)
    directory.learn(WorkerRef(worker_id="w", region="r", status=worker_pb2.WORKER_STATUS_RUNNING), at=0.0)
    clock.now = 10_000.0
    stop = asyncio.Event()
    calls: list[str] = []

    async def flaky(region: str, worker_id: str) -> float | None:
        calls.append(worker_id)
        if len(calls) == 1:
            raise RuntimeError("a bug in one sweep")
        stop.set()
        return clock.now

    last.last_sample_at = flaky  # type: ignore[method-assign]
    await asyncio.wait_for(sweeper.run(stop), 10)  # returns instead of raising: the second sweep ran
    assert calls == ["w", "w"]


async def test_each_sweep_reports_alerts_firing_by_rule_and_severity_and_silences_in_force() -> None:
    clock = Clock()
    store, directory = FakeStore(), Directory()
    evaluator = Evaluator(store, FakePublisher(), directory, FiringPolicy(), Thresholds(), clock=clock)
    sweeper = Sweeper(evaluator, FakeLastSamples(), default_interval=10, silent_intervals=3, period=1, clock=clock)
    directory.learn(WorkerRef(worker_id="w", region="r", status=worker_pb2.WORKER_STATUS_RUNNING), at=0.0)
    await store.put_silence(Silence("s-old", "", "cpu_high", end_time=50.0))
    await store.put_silence(Silence("s-now", "other", "", end_time=5000.0))
    clock.now += 1000.0
    await sweeper.sweep_once()  # silent for 100 intervals since the sweeper started: fires

    severity = SEVERITIES[Rule.SILENT].value
    assert evaluator.firing_by_rule() == {("silent", severity): 1}
    assert metrics.FIRING_BY_RULE.labels("silent", severity)._value.get() == 1
    assert metrics.FIRING_BY_RULE.labels("cpu_high", "warning")._value.get() == 0  # present, at zero
    assert metrics.SILENCES._value.get() == 1  # the expired one does not count
