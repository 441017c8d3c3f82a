"""Two replicas deciding on the same worker at the same moment: both read the same state from the real KV
bucket (a barrier holds each after its read until the other has read too), both decide to stop, and the
compare-and-set lets one of them act. A replica that dies between claiming a stop and calling the registry:
once its claim expires, another replica finishes the stop, once; a replica presumed dead that answers after
all does not announce the stop a second time. Fakes stand only for the registry, the controller and the
publisher."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from autopilot.adapters.state_kv import KvStateStore
from autopilot.domain.autostop import AutostopPolicy, PilotState
from autopilot.domain.idle import IdlePolicy, IdleState
from autopilot.domain.prices import price_table
from autopilot.service.pilot import Pilot
from cml.monitor.v1 import alert_pb2, events_pb2, worker_pb2
from cmlmon_core.cml import Controller

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 5, 22, 0, tzinfo=UTC)


class CountingRegistry:
    def __init__(self, worker: worker_pb2.Worker) -> None:
        self.worker = worker
        self.stops: list[str] = []

    async def get_worker(self, worker_id: str) -> worker_pb2.Worker | None:
        return self.worker

    async def stop_worker(self, worker_id: str) -> worker_pb2.Worker:
        self.stops.append(worker_id)
        return self.worker

    async def start_worker(self, worker_id: str) -> worker_pb2.Worker:
        raise AssertionError("nothing starts here")

    async def reboot_worker(self, worker_id: str) -> worker_pb2.Worker:
        raise AssertionError("nothing reboots here")

    async def set_controller(self, worker_id: str, controller: worker_pb2.CmlController) -> worker_pb2.Worker:
        raise AssertionError("the worker has no controller")


class HeldRegistry(CountingRegistry):
    """StopWorker is held before it is sent (reached is set) until release is set, then counted and done."""

    def __init__(self, worker: worker_pb2.Worker) -> None:
        super().__init__(worker)
        self.reached, self.release = asyncio.Event(), asyncio.Event()

    async def stop_worker(self, worker_id: str) -> worker_pb2.Worker:
        self.reached.set()
        await self.release.wait()
        return await super().stop_worker(worker_id)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class NoController:
    async def probe(self, url: str) -> Controller:
        raise AssertionError("the worker has no controller")


class Collected:
    def __init__(self) -> None:
        self.actions: list[str] = []

    async def publish(self, decision: events_pb2.AutopilotDecision, alert: alert_pb2.Alert) -> None:
        self.actions.append(decision.action)

    async def publish_alert(self, alert: alert_pb2.Alert) -> None:
        self.actions.append(alert.rule)


class ReadTogether:
    """The real store; each replica's first read waits until both replicas have read."""

    def __init__(self, store: KvStateStore, barrier: asyncio.Barrier) -> None:
        self._store = store
        self._barrier = barrier
        self._first = True

    async def get(self, worker_id: str) -> tuple[PilotState, int]:
        got = await self._store.get(worker_id)
        if self._first:
            self._first = False
            await asyncio.wait_for(self._barrier.wait(), 10)
        return got

    async def put(self, worker_id: str, state: PilotState, revision: int) -> None:
        await self._store.put(worker_id, state, revision)


def sample_at(worker: worker_pb2.Worker, at: datetime) -> events_pb2.MetricSample:
    when = Timestamp()
    when.FromDatetime(at)
    return events_pb2.MetricSample(worker_id=worker.id, observe_time=when, cpu_utilization=0.5,
                                   network_in_bytes_per_second=900.0, network_out_bytes_per_second=100.0,
                                   status=worker_pb2.WORKER_STATUS_RUNNING)


async def warned_worker(js: JetStreamContext) -> tuple[worker_pb2.Worker, KvStateStore]:
    """A worker idle for three hours and warned twenty minutes ago: the next quiet sample asks for the stop."""
    worker = worker_pb2.Worker(id=f"w-{uuid.uuid4().hex[:10]}", name="cml-a", instance_type="c5.metal")
    store = await KvStateStore.open(js)
    await store.put(worker.id, PilotState(idle=IdleState(NOW - timedelta(hours=3), NOW - timedelta(minutes=1)),
                                          idle_notified=True, warned_at=NOW - timedelta(minutes=20)), 0)
    return worker, store


async def test_two_replicas_deciding_at_once_stop_once(js: JetStreamContext) -> None:
    worker, store = await warned_worker(js)
    registry, published = CountingRegistry(worker), Collected()
    barrier = asyncio.Barrier(2)
    policy = AutostopPolicy(mode="enforce", grace_seconds=900, idle=IdlePolicy(idle_for_seconds=7200))
    replicas = [Pilot(registry, NoController(), ReadTogether(store, barrier), published, policy, price_table())
                for _ in range(2)]
    sample = sample_at(worker, NOW)
    await asyncio.gather(*(r.handle_sample(sample) for r in replicas))
    assert registry.stops == [worker.id]
    assert published.actions == ["stopped"]
    state, _ = await store.get(worker.id)
    assert state.stop_requested_at == NOW


POLICY = AutostopPolicy(mode="enforce", grace_seconds=900, idle=IdlePolicy(idle_for_seconds=7200),
                        claim_seconds=120)


async def test_a_stop_claimed_by_a_replica_that_dies_before_the_call_is_finished_once_by_another(
        js: JetStreamContext) -> None:
    worker, store = await warned_worker(js)
    clock = Clock(datetime.now(UTC))
    dying, registry, published = HeldRegistry(worker), CountingRegistry(worker), Collected()
    first = Pilot(dying, NoController(), store, published, POLICY, price_table(), clock=clock)
    other = Pilot(registry, NoController(), store, published, POLICY, price_table(), clock=clock)

    claiming = asyncio.create_task(first.handle_sample(sample_at(worker, NOW)))
    await asyncio.wait_for(dying.reached.wait(), 10)  # claimed; the call is not sent yet
    claiming.cancel()  # the replica dies
    with contextlib.suppress(asyncio.CancelledError):
        await claiming
    claimed, _ = await store.get(worker.id)
    assert claimed.stop_claimed_at == clock.now and claimed.stop_requested_at == NOW

    clock.now += timedelta(seconds=60)  # the claim may still be in hand: left alone
    await other.handle_sample(sample_at(worker, NOW + timedelta(minutes=1)))
    assert registry.stops == [] and published.actions == []

    clock.now += timedelta(seconds=60)  # two minutes (claim_seconds) without an answer: the claimer is dead
    await other.handle_sample(sample_at(worker, NOW))  # the dead replica's sample, redelivered: older, ignored
    assert registry.stops == []
    await other.handle_sample(sample_at(worker, NOW + timedelta(minutes=2)))
    assert registry.stops == [worker.id] and published.actions == ["stopped"]
    for minute in (3, 4):
        await other.handle_sample(sample_at(worker, NOW + timedelta(minutes=minute)))
    assert dying.stops == [] and registry.stops == [worker.id] and published.actions == ["stopped"]
    state, _ = await store.get(worker.id)
    assert state.stop_claimed_at is None and state.stop_settled == clock.now


async def test_a_replica_presumed_dead_that_answers_late_does_not_announce_the_stop_again(
        js: JetStreamContext) -> None:
    worker, store = await warned_worker(js)
    clock = Clock(datetime.now(UTC))
    slow, registry, published = HeldRegistry(worker), CountingRegistry(worker), Collected()
    first = Pilot(slow, NoController(), store, published, POLICY, price_table(), clock=clock)
    other = Pilot(registry, NoController(), store, published, POLICY, price_table(), clock=clock)

    claiming = asyncio.create_task(first.handle_sample(sample_at(worker, NOW)))
    await asyncio.wait_for(slow.reached.wait(), 10)
    clock.now += timedelta(seconds=120)
    await other.handle_sample(sample_at(worker, NOW + timedelta(minutes=2)))  # takes the stop over
    slow.release.set()
    await asyncio.wait_for(claiming, 10)
    # StopWorker twice (the registry leaves a stopping worker as it is), announced once
    assert registry.stops == [worker.id] and slow.stops == [worker.id]
    assert published.actions == ["stopped"]
