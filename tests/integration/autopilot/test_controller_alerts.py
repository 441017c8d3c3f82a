"""An unhealthy controller and a licence out of compliance become alerts on CML_ALERTS (which the notifier's
sinks deliver), once each, and resolve when the controller is fine again."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from cml.monitor.v1 import alert_pb2
from cmlmon_core import messages
from cmlmon_dev.cml_sim import CmlController
from tests.integration.autopilot.conftest import Fleet, autopilot_settings, running_autopilots
from tests.support import eventually

pytestmark = pytest.mark.integration


async def test_unhealthy_controller_and_noncompliant_licence_alert_once_and_resolve(
        fleet: Fleet, cml: CmlController, nats_url: str, js: JetStreamContext) -> None:
    cml.healthy, cml.authorization = False, "OUT_OF_COMPLIANCE"
    worker = await fleet.worker({"cml:url": cml.url})
    seen: list[tuple[str, int]] = []

    async def on_msg(msg: Any) -> None:
        alert = messages.decode(alert_pb2.Alert, msg.data, msg.headers)
        seen.append((alert.rule, alert.state))

    sub = await js.subscribe(f"cml.alerts.{worker.id}.*", cb=on_msg, ordered_consumer=True,
                             deliver_policy=DeliverPolicy.NEW)
    firing, resolved = alert_pb2.ALERT_STATE_FIRING, alert_pb2.ALERT_STATE_RESOLVED
    try:
        async with running_autopilots(js, autopilot_settings(nats_url, fleet.registry,
                                                             f"autopilot-{uuid.uuid4().hex[:8]}")):
            for minute in range(0, 3):
                await fleet.sample(worker, minute, cpu=50.0)
            await fleet.handled(worker, 2)
            await eventually(lambda: len(seen) >= 2, timeout=30)
            cml.healthy, cml.authorization = True, "IN_COMPLIANCE"
            for minute in range(3, 6):
                await fleet.sample(worker, minute, cpu=50.0)
            await fleet.handled(worker, 5)
            await eventually(lambda: len(seen) >= 4, timeout=30)
    finally:
        await sub.unsubscribe()
    assert sorted(seen) == sorted([("cml_unhealthy", firing), ("cml_licence_noncompliant", firing),
                                   ("cml_unhealthy", resolved), ("cml_licence_noncompliant", resolved)])
