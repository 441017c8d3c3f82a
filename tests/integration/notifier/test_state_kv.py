"""The KV alert store against a real bucket: CAS between two replicas' stores, the watch keeping caches
current, writes after a delete marker."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import pytest
from nats.js import JetStreamContext

from notifier.adapters.state_kv import KvAlertStore
from notifier.domain.model import AlertState, Phase
from notifier.errors import StateConflict
from tests.integration.notifier.support import eventually

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
        rev2 = await b.put(replace(state, phase=Phase.FIRING), rev)
        with pytest.raises(StateConflict):
            await a.put(replace(state, phase=Phase.INACTIVE), rev)
        assert (await a.refresh(state.key))[1] == rev2

        kv = await js.key_value("cml_alerts")
        await kv.delete(state.key)
        await eventually(lambda: a.cached(state.key)[0] is None)
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
