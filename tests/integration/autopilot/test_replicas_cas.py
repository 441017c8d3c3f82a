"""Two replicas deciding on the same worker at the same moment: both read the same state from the real KV
bucket (a barrier holds each after its read until the other has read too), both decide to stop, and the
compare-and-set lets one of them act. Fakes stand only for the registry, the controller and the publisher."""

from __future__ import annotations

import asyncio
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


async def test_two_replicas_deciding_at_once_stop_once(js: JetStreamContext) -> None:
    worker = worker_pb2.Worker(id=f"w-{uuid.uuid4().hex[:10]}", name="cml-a", instance_type="c5.metal")
    store = await KvStateStore.open(js)
    # Idle for three hours and warned twenty minutes ago: the next quiet sample asks for the stop.
    await store.put(worker.id, PilotState(idle=IdleState(NOW - timedelta(hours=3), NOW - timedelta(minutes=1)),
                                          idle_notified=True, warned_at=NOW - timedelta(minutes=20)), 0)
    registry, published = CountingRegistry(worker), Collected()
    barrier = asyncio.Barrier(2)
    policy = AutostopPolicy(mode="enforce", grace_seconds=900, idle=IdlePolicy(idle_for_seconds=7200))
    replicas = [Pilot(registry, NoController(), ReadTogether(store, barrier), published, policy, price_table())
                for _ in range(2)]
    when = Timestamp()
    when.FromDatetime(NOW)
    sample = events_pb2.MetricSample(worker_id=worker.id, observe_time=when, cpu_utilization=0.5,
                                     network_in_bytes_per_second=900.0, network_out_bytes_per_second=100.0,
                                     status=worker_pb2.WORKER_STATUS_RUNNING)
    await asyncio.gather(*(r.handle_sample(sample) for r in replicas))
    assert registry.stops == [worker.id]
    assert published.actions == ["stopped"]
    state, _ = await store.get(worker.id)
    assert state.stop_requested_at == NOW
