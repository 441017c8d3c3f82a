"""The KV alert store against a real bucket: CAS between two replicas' stores, the watch keeping caches
current, writes after a delete marker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace

import pytest
from nats.js import JetStreamContext

from notifier.adapters.lease import KvLease
from notifier.adapters.state_kv import KvAlertStore
from notifier.domain.model import AlertState, Phase
from notifier.errors import StateConflict
from tests.integration.notifier.support import eventually, notifier_settings, receiving, running_notifier

pytestmark = pytest.mark.integration


async def test_two_stores_compare_and_set(js: JetStreamContext, uid: str) -> None:
    a, b = await KvAlertStore.open(js), await KvAlertStore.open(js)
    await a.start()
    await b.start()
    watches = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        state = AlertState(worker_id=f"kv-{uid}", rule="cpu_high", phase=Phase.PENDING, window=(True,))
        rev = await a.put(state, 0)
        with pytest.raises(StateConflict):
            await b.put(replace(state, phase=Phase.FIRING), 0)  # b has not read it: must lose
        await eventually(lambda: b.cached(state.key)[1] == rev)  # the watch brought it
        assert b.cached(state.key)[0] == state
        assert b.worker_states(state.worker_id) == {"cpu_high": state}  # indexed by worker too
        rev2 = await b.put(replace(state, phase=Phase.FIRING), rev)
        assert b.worker_states(state.worker_id)["cpu_high"].phase is Phase.FIRING  # its own write replaced it
        with pytest.raises(StateConflict):
            await a.put(replace(state, phase=Phase.INACTIVE), rev)
        assert (await a.refresh(state.key))[1] == rev2

        kv = await js.key_value("cml_alerts")
        await kv.delete(state.key)
        await eventually(lambda: a.cached(state.key)[0] is None)
        assert a.worker_states(state.worker_id) == {}
        _, marker = await a.refresh(state.key)
        assert marker > rev2
        assert await a.put(state, marker) > marker  # a write after a delete names the marker's revision
    finally:
        for w in watches:
            w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w
        await a.stop()
        await b.stop()


async def test_transition_left_in_the_outbox_is_published_by_a_later_notifier(js: JetStreamContext, nats_url: str,
                                                                              uid: str) -> None:
    # What a notifier that died between its state write and its publish leaves behind.
    worker_id = f"ob-{uid}"
    left = AlertState(worker_id=worker_id, rule="memory_high", phase=Phase.FIRING, start_time=time.time() - 60,
                      value=97.0, threshold=90.0, severity="warning", worker_name="crashed",
                      unpublished=f"{worker_id}.memory_high.0.firing", unpublished_since=time.time() - 60)
    kv = await js.key_value("cml_alerts")
    await kv.create(left.key, left.to_json())
    async with receiving() as receiver:
        settings = notifier_settings(nats_url, uid, worker_notification_webhooks=receiver.url)
        async with running_notifier(settings):
            got = await eventually(lambda: receiver.for_worker(worker_id))
            entry = await _wait_cleared(kv, left.key)
    assert [(r.json()["rule"], r.json()["status"], r.json()["transition_id"]) for r in got] == [
        ("memory_high", "firing", left.unpublished)]
    assert AlertState.from_json(entry).unpublished == ""


async def _wait_cleared(kv: object, key: str) -> bytes:
    async def cleared() -> bytes | None:
        entry = await kv.get(key)  # type: ignore[attr-defined]
        return bytes(entry.value) if b'"unpublished":""' in entry.value else None

    value: bytes = await eventually(cleared, timeout=30)
    return value


async def test_one_replica_holds_a_lease_until_it_expires_or_is_released(js: JetStreamContext, uid: str) -> None:
    now = [1000.0]
    a = KvLease(js, f"test-{uid}", "replica-a", ttl=10.0, clock=lambda: now[0])
    b = KvLease(js, f"test-{uid}", "replica-b", ttl=10.0, clock=lambda: now[0])
    assert await a.hold() and not await b.hold()
    now[0] += 8
    assert await a.hold() and not await b.hold()  # renewed: until is 1018 now
    now[0] += 9
    assert not await b.hold()
    now[0] += 2  # a stopped renewing: expired
    assert await b.hold() and not await a.hold()
    await b.release()
    assert await a.hold()
    await a.release()
    assert await b.hold()
    await b.release()
