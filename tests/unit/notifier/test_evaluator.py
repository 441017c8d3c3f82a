"""The evaluation use-cases against fakes of the state store and publisher (our logic only; the real KV and
JetStream are exercised by the integration tests)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cml.monitor.v1 import alert_pb2, worker_pb2
from notifier.domain.model import AlertState, FiringPolicy, Phase, Sample, WorkerRef
from notifier.domain.silences import Silence
from notifier.errors import PublishFailed
from notifier.service.evaluator import Directory, Evaluator, Thresholds
from tests.unit.notifier.fakes import Clock, FakePublisher, FakeStore


def one(for_seconds: float) -> FiringPolicy:
    """One breaching sample suffices (plus the duration)."""
    return FiringPolicy(for_seconds=for_seconds, min_samples=1, window_samples=1)


W = WorkerRef(worker_id="w1", name="cml-1", instance_id="i-01", region="us-east-1",
              status=worker_pb2.WORKER_STATUS_RUNNING)


def setup(policy: FiringPolicy | None = None) -> tuple[Evaluator, FakeStore, FakePublisher, Clock]:
    store, pub, clock = FakeStore(), FakePublisher(), Clock()
    directory = Directory()
    directory.learn(W, 0.0)
    ev = Evaluator(store, pub, directory, policy or one(0), Thresholds(), clock=clock)
    return ev, store, pub, clock


def cpu(value: float | None, at: float = 1000.0) -> Sample:
    return Sample(worker_id="w1", region="us-east-1", instance_id="i-01", at=at,
                  status=worker_pb2.WORKER_STATUS_RUNNING, cpu=value)


def summary(pub: FakePublisher) -> list[tuple[str, str, bool]]:
    return [(a.rule, alert_pb2.AlertState.Name(a.state), a.silenced) for a in pub.alerts]


async def test_fires_once_and_resolves_once() -> None:
    ev, store, pub, _ = setup()
    for value in (50, 95, 96, 97, 88, None, 84, 20):
        await ev.handle_sample(cpu(value))
    assert summary(pub) == [("cpu_high", "ALERT_STATE_FIRING", False), ("cpu_high", "ALERT_STATE_RESOLVED", False)]
    assert pub.alerts[0].worker_name == "cml-1" and pub.alerts[0].value == 95
    assert len({a.transition_id for a in pub.alerts}) == 2
    assert store.cached("w1.cpu_high")[0].phase is Phase.INACTIVE  # type: ignore[union-attr]


async def test_cool_samples_write_nothing() -> None:
    ev, store, pub, _ = setup()
    for _ in range(5):
        await ev.handle_sample(cpu(10))
    assert store.rev == 0 and not pub.alerts


async def test_conflict_rereads_and_does_not_fire_twice() -> None:
    ev, store, pub, _ = setup()
    # another replica fires the same alert between our read and our write
    store.conflict_with = AlertState(worker_id="w1", rule="cpu_high", phase=Phase.FIRING, start_time=999.0)
    await ev.handle_sample(cpu(95))
    assert pub.alerts == []  # only the winner of the compare-and-set publishes
    assert store.cached("w1.cpu_high")[0].start_time == 999.0  # type: ignore[union-attr]
    await ev.handle_sample(cpu(96))
    assert pub.alerts == []


async def test_outbox_publishes_what_a_failed_publish_left_behind() -> None:
    ev, store, pub, clock = setup()
    failing = {"left": 1}
    real = pub.publish_alert

    async def flaky(alert: alert_pb2.Alert) -> None:
        if failing["left"]:
            failing["left"] -= 1
            raise PublishFailed("nats down")
        await real(alert)

    pub.publish_alert = flaky  # type: ignore[method-assign]
    with pytest.raises(PublishFailed):
        await ev.handle_sample(cpu(95))
    state = store.cached("w1.cpu_high")[0]
    assert state is not None and state.phase is Phase.FIRING and state.unpublished == "w1.cpu_high.0.firing"
    await ev.handle_sample(cpu(96))  # the redelivered sample finds the alert firing: nothing new
    assert await ev.publish_outbox() == 0  # too recent: its writer may still be publishing
    clock.now += 10
    assert await ev.publish_outbox() == 1
    assert [a.transition_id for a in pub.alerts] == ["w1.cpu_high.0.firing"]
    assert store.cached("w1.cpu_high")[0].unpublished == ""  # type: ignore[union-attr]
    assert await ev.publish_outbox() == 0


async def test_silenced_firing_and_its_resolution_are_not_delivered() -> None:
    ev, store, pub, _ = setup()
    await store.put_silence(Silence(silence_id="s", worker_id="w1", rule="", end_time=2000.0))
    await ev.handle_sample(cpu(95))
    await ev.handle_sample(cpu(10))
    assert summary(pub) == [("cpu_high", "ALERT_STATE_FIRING", True), ("cpu_high", "ALERT_STATE_RESOLVED", True)]


async def test_resolution_of_a_delivered_firing_is_delivered_despite_a_silence() -> None:
    ev, store, pub, _ = setup()
    await ev.handle_sample(cpu(95))
    await store.put_silence(Silence(silence_id="s", worker_id="w1", rule="cpu_high", end_time=2000.0))
    await ev.handle_sample(cpu(10))
    assert summary(pub) == [("cpu_high", "ALERT_STATE_FIRING", False), ("cpu_high", "ALERT_STATE_RESOLVED", False)]


async def test_silence_ending_while_firing_delivers_once() -> None:
    ev, store, pub, clock = setup()
    await store.put_silence(Silence(silence_id="s", worker_id="w1", rule="", end_time=1500.0))
    await ev.handle_sample(cpu(95))
    assert await ev.redeliver_unsilenced() == []  # still silenced
    clock.now = 1600.0
    assert len(await ev.redeliver_unsilenced()) == 1
    assert await ev.redeliver_unsilenced() == []
    assert summary(pub) == [("cpu_high", "ALERT_STATE_FIRING", True), ("cpu_high", "ALERT_STATE_FIRING", False)]


async def test_unexpected_stop_then_running_sample_resolves() -> None:
    ev, _, pub, _ = setup()
    await ev.handle_worker_event(replace(W, status=worker_pb2.WORKER_STATUS_STOPPED),
                                 worker_pb2.WORKER_STATUS_RUNNING, requested=False, at=1000.0)
    await ev.handle_worker_event(replace(W, status=worker_pb2.WORKER_STATUS_STOPPED),
                                 worker_pb2.WORKER_STATUS_RUNNING, requested=False, at=1001.0)
    await ev.handle_sample(cpu(10))
    assert summary(pub) == [("unexpected_stop", "ALERT_STATE_FIRING", False),
                            ("unexpected_stop", "ALERT_STATE_RESOLVED", False)]
    assert pub.alerts[0].severity == alert_pb2.ALERT_SEVERITY_CRITICAL


async def test_directory_ignores_older_events() -> None:
    d = Directory()
    d.learn(replace(W, name="new"), 10.0, seq=5)
    d.learn(replace(W, name="old"), 5.0, seq=3)
    assert d.get("w1").name == "new"  # type: ignore[union-attr]
    assert d.resolve(cpu(1)).name == "new"
    assert d.resolve(cpu(1)._replace(worker_id="unknown")).instance_id == "i-01"
