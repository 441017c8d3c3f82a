"""The Alertmanager re-send: what is re-sent (delivered firing alerts only), and only by the lease holder."""

from __future__ import annotations

import asyncio

from notifier.domain.model import AlertState, Phase
from notifier.domain.payloads import AlertView
from notifier.errors import DeliveryFailed
from notifier.service.resender import Resender
from tests.unit.notifier.fakes import FakeStore


class Target:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[AlertView]] = []
        self.fail = fail
        self.twice = asyncio.Event()

    async def resend(self, alerts: list[AlertView]) -> None:
        self.batches.append(alerts)
        if len(self.batches) >= 2:
            self.twice.set()
        if self.fail:
            raise DeliveryFailed("HTTP 503")


class Lease:
    def __init__(self, held: bool) -> None:
        self.held = held
        self.released = False

    async def hold(self) -> bool:
        return self.held

    async def release(self) -> None:
        self.released = True


async def _store() -> FakeStore:
    store = FakeStore()
    for worker, phase, silenced in (("w1", Phase.FIRING, False), ("w2", Phase.FIRING, True),
                                    ("w3", Phase.PENDING, False), ("w4", Phase.INACTIVE, False)):
        await store.put(AlertState(worker_id=worker, rule="cpu_high", phase=phase, silenced=silenced,
                                   severity="warning", start_time=1000.0, value=95.0), 0)
    return store


async def test_the_holder_re_sends_delivered_firing_alerts_only() -> None:
    target = Target()
    sent = await Resender("am", await _store(), target, Lease(True), 60).resend_once()
    assert sent == 1 and [[(a.alert_id, a.status) for a in b] for b in target.batches] == [[("w1.cpu_high",
                                                                                              "firing")]]
    assert target.batches[0][0].start_time == 1000.0 and target.batches[0][0].value == 95.0


async def test_a_replica_without_the_lease_sends_nothing() -> None:
    target = Target()
    assert await Resender("am", await _store(), target, Lease(False), 60).resend_once() == 0
    assert not target.batches


async def test_a_failing_alertmanager_does_not_stop_the_loop_and_the_lease_is_released() -> None:
    target, lease, stop = Target(fail=True), Lease(True), asyncio.Event()
    resender = Resender("am", await _store(), target, lease, 0.01)
    task = asyncio.create_task(resender.run(stop))
    await asyncio.wait_for(target.twice.wait(), 5)  # failed once, tried again next period
    stop.set()
    await asyncio.wait_for(task, 5)
    assert lease.released
