"""Remediation's claim against the real KV state store, with a registry stand-in that counts or refuses: two
replicas handling the same impaired sample at the same moment reboot once; a reboot the registry refuses is
escalated at once and the worker left alone; a failed system check on a worker the registry does not give as
EBS-backed is escalated, never stopped."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from autopilot.adapters.state_kv import KvStateStore
from autopilot.domain.autostop import AutostopPolicy, PilotState
from autopilot.domain.idle import IdleState
from autopilot.domain.prices import price_table
from autopilot.domain.remediation import RemediationPolicy, RemediationState
from autopilot.errors import RegistryCallFailed
from autopilot.service.pilot import Pilot
from autopilot.service.remedy import Remediation
from cml.monitor.v1 import alert_pb2, events_pb2, worker_pb2
from cmlmon_core.cml import Controller

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 5, 22, 0, tzinfo=UTC)
POLICY = RemediationPolicy(mode="enforce", impaired_for_seconds=300, recover_within_seconds=600,
                           period_seconds=3600)


class Registry:
    def __init__(self, worker: worker_pb2.Worker, refuse: bool = False) -> None:
        self.worker, self.refuse = worker, refuse
        self.reboots: list[str] = []

    async def get_worker(self, worker_id: str) -> worker_pb2.Worker | None:
        return self.worker

    async def reboot_worker(self, worker_id: str) -> worker_pb2.Worker:
        self.reboots.append(worker_id)
        if self.refuse:
            raise RegistryCallFailed(f"RebootWorker {worker_id}: FAILED_PRECONDITION: not running")
        return self.worker

    async def stop_worker(self, worker_id: str) -> worker_pb2.Worker:
        raise AssertionError("nothing stops here")

    async def set_controller(self, worker_id: str, controller: worker_pb2.CmlController) -> worker_pb2.Worker:
        raise AssertionError("the worker has no controller")

    async def start_worker(self, worker_id: str) -> worker_pb2.Worker:
        raise AssertionError("nothing starts here")


class NoController:
    async def probe(self, url: str) -> Controller:
        raise AssertionError("the worker has no controller")


class Collected:
    def __init__(self) -> None:
        self.decisions: list[events_pb2.AutopilotDecision] = []

    async def publish(self, decision: events_pb2.AutopilotDecision, alert: alert_pb2.Alert) -> None:
        self.decisions.append(decision)

    async def publish_alert(self, alert: alert_pb2.Alert) -> None:
        raise AssertionError("only decisions with their alert here")


class ReadTogetherAt:
    """The real store; each replica's n-th read waits until every replica has made it, so they decide on the
    same revision (the race the compare-and-set is there for, made certain)."""

    def __init__(self, store: KvStateStore, barrier: asyncio.Barrier, nth: int) -> None:
        self._store, self._barrier, self._nth = store, barrier, nth
        self._reads = 0

    async def get(self, worker_id: str) -> tuple[PilotState, int]:
        got = await self._store.get(worker_id)
        self._reads += 1
        if self._reads == self._nth:
            await asyncio.wait_for(self._barrier.wait(), 10)
        return got

    async def put(self, worker_id: str, state: PilotState, revision: int) -> None:
        await self._store.put(worker_id, state, revision)


def impaired(worker: worker_pb2.Worker, minutes: float = 0, system: bool = False) -> events_pb2.MetricSample:
    """An instance check impaired; or, with system, the system check."""
    when = Timestamp()
    when.FromDatetime(NOW + timedelta(minutes=minutes))
    ok, bad = worker_pb2.STATUS_CHECK_OK, worker_pb2.STATUS_CHECK_IMPAIRED
    return events_pb2.MetricSample(worker_id=worker.id, observe_time=when, status=worker_pb2.WORKER_STATUS_RUNNING,
                                   system_status_check=bad if system else ok,
                                   instance_status_check=ok if system else bad)


async def pilots(js: JetStreamContext, registry: Registry, count: int) -> tuple[list[Pilot], Collected]:
    """Pilots sharing the real store, with the worker impaired for ten minutes already. Auto-stop (off) has
    nothing to write for the first sample, so a pilot's second read is remediation's: there they meet."""
    store = await KvStateStore.open(js)
    await store.put(registry.worker.id, PilotState(idle=IdleState(last_seen=NOW), remediation=RemediationState(
        last_seen=NOW - timedelta(minutes=1), impaired_since=NOW - timedelta(minutes=10))), 0)
    published = Collected()
    remediation = Remediation(registry, published, POLICY)
    barrier = asyncio.Barrier(count)
    return [Pilot(registry, NoController(), ReadTogetherAt(store, barrier, 2), published, AutostopPolicy(),
                  price_table(), remediation=remediation) for _ in range(count)], published


def worker(root: worker_pb2.RootDeviceType = worker_pb2.ROOT_DEVICE_TYPE_EBS) -> worker_pb2.Worker:
    return worker_pb2.Worker(id=f"w-{uuid.uuid4().hex[:10]}", name="cml-h", instance_type="c5.metal",
                             root_device_type=root)


async def test_two_replicas_handling_the_same_impaired_sample_reboot_once(js: JetStreamContext) -> None:
    registry = Registry(worker())
    replicas, published = await pilots(js, registry, 2)
    sample = impaired(registry.worker)
    await asyncio.gather(*(r.handle_sample(sample) for r in replicas))
    assert registry.reboots == [registry.worker.id]
    assert [d.action for d in published.decisions] == ["rebooted"]


async def test_a_refused_reboot_is_escalated_and_the_worker_left_alone(js: JetStreamContext) -> None:
    registry = Registry(worker(), refuse=True)
    [pilot], published = await pilots(js, registry, 1)
    for minute in (0, 5, 20, 40):
        await pilot.handle_sample(impaired(registry.worker, minute))
    assert registry.reboots == [registry.worker.id]
    [escalated] = published.decisions
    assert escalated.action == "escalated" and "FAILED_PRECONDITION" in escalated.reason


@pytest.mark.parametrize("root", [worker_pb2.ROOT_DEVICE_TYPE_INSTANCE_STORE, worker_pb2.ROOT_DEVICE_TYPE_UNSPECIFIED])
async def test_a_failed_system_check_is_escalated_unless_the_registry_says_ebs(
        js: JetStreamContext, root: worker_pb2.RootDeviceType) -> None:
    registry = Registry(worker(root))  # its StopWorker fails the test
    [pilot], published = await pilots(js, registry, 1)
    await pilot.handle_sample(impaired(registry.worker, system=True))
    [escalated] = published.decisions
    store = "is not EBS-backed" if root == worker_pb2.ROOT_DEVICE_TYPE_INSTANCE_STORE else "unknown root device"
    assert escalated.action == "escalated" and store in escalated.reason
