"""Off-hours end to end: after closing time a running lab makes the scheduled stop wait (and says so once); when
the lab stops, the worker is stopped through the registry. Observation times are fixed in the past, so the
schedule is evaluated on a frozen clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from nats.js import JetStreamContext

from cmlmon_dev.cml_sim import CmlController
from tests.integration.autopilot.conftest import Fleet, autopilot_settings, running_autopilots
from tests.support import eventually

pytestmark = pytest.mark.integration
CLOSING = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)  # a Wednesday, 19:00 in Berlin


async def test_the_scheduled_stop_waits_for_a_running_lab_then_stops(
        fleet: Fleet, cml: CmlController, nats_url: str, js: JetStreamContext) -> None:
    lab = cml.add_lab("BOOTED")
    worker = await fleet.worker({"cml:url": cml.url, "cmlmon:offhours": "Mon-Fri 08:00-19:00 Europe/Berlin"})
    settings = autopilot_settings(nats_url, fleet.registry, f"autopilot-{uuid.uuid4().hex[:8]}",
                                  idle_for_seconds=86_400)
    async with running_autopilots(js, settings):
        for minute in range(-5, 10):
            await fleet.sample(worker, minute, base=CLOSING)
        await fleet.handled(worker, 9, base=CLOSING)
        await eventually(lambda: "schedule_waiting" in fleet.decisions.actions(worker.id), timeout=60)
        assert fleet.decisions.actions(worker.id) == ["schedule_waiting"]
        assert await fleet.ec2_state(worker) == "running"
        cml.set_nodes(lab, "STOPPED")
        await fleet.sample(worker, 10, base=CLOSING)
        await eventually(lambda: "scheduled_stop" in fleet.decisions.actions(worker.id), timeout=60)
    assert fleet.decisions.actions(worker.id) == ["schedule_waiting", "scheduled_stop"]
    assert await fleet.ec2_state(worker) in ("stopping", "stopped")
