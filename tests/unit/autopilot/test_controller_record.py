"""What a probe's figures look like on the Worker, and when they are sent to the registry: at once when they
changed, every RECORD_EVERY_SECONDS while they did not."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from autopilot.service.pilot import RECORD_EVERY_SECONDS, controller_message, needs_recording
from cmlmon_core.cml import Controller

T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
GOOD = Controller(url="https://10.0.1.23", reachable=True, version="2.8.1", healthy=True, registration="COMPLETED",
                  authorization="IN_COMPLIANCE", labs=2, running_nodes=0)


def test_unknown_figures_stay_absent() -> None:
    msg = controller_message(Controller(url="https://10.0.1.23", reachable=False, error="ConnectError"), T0)
    assert not msg.reachable and msg.error == "ConnectError"
    assert not msg.HasField("healthy") and not msg.HasField("labs") and not msg.HasField("running_nodes")
    assert msg.probe_time.ToDatetime(tzinfo=UTC) == T0
    good = controller_message(GOOD, T0)
    assert (good.healthy, good.labs, good.running_nodes, good.licence_registration) == (True, 2, 0, "COMPLETED")


def test_recorded_when_new_changed_or_old_only() -> None:
    recorded = controller_message(GOOD, T0)
    later = T0 + timedelta(seconds=RECORD_EVERY_SECONDS - 1)
    assert needs_recording(None, recorded, T0)
    assert not needs_recording(recorded, controller_message(GOOD, later), later)
    assert needs_recording(recorded, controller_message(replace(GOOD, running_nodes=3), later), later)
    gone = Controller(url=GOOD.url, reachable=False, error="timeout")
    assert needs_recording(recorded, controller_message(gone, later), later)
    stale = T0 + timedelta(seconds=RECORD_EVERY_SECONDS)
    assert needs_recording(recorded, controller_message(GOOD, stale), stale)
