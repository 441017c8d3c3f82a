"""`cmlmon alerts`, `cmlmon silences` and `cmlmon status` against a notifier and a registry process."""

from __future__ import annotations

from typing import Any

import pytest
from nats.js import JetStreamContext

from cmlmon_dev.servers import free_port
from tests.e2e.cli.support import AMI, RUNNING, Fleet, publish_sample
from tests.support import eventually

pytestmark = pytest.mark.e2e


def firing(fleet: Fleet, worker_id: str) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = fleet.json("alerts", "list", "--worker", worker_id)["alerts"]
    return alerts


async def test_a_firing_alert_is_listed_and_silenced(fleet: Fleet, fleet_js: JetStreamContext, uid: str) -> None:
    worker = fleet.json("workers", "create", "--name", f"hot-{uid}", "--region", "us-east-1", "--instance-type",
                        "c5.large", "--ami", AMI)
    await publish_sample(fleet_js, worker, RUNNING, cpu_utilization=97.5)
    alerts = await eventually(lambda: firing(fleet, worker["id"]), timeout=60)
    assert [(a["rule"], a["state"], a["value"]) for a in alerts] == [("cpu_high", "ALERT_STATE_FIRING", 97.5)]

    table = fleet.run("alerts", "list", "--worker", worker["id"])
    assert table.returncode == 0
    header, line = table.stdout.splitlines()
    assert header.split()[:4] == ["WORKER", "RULE", "SEVERITY", "STATE"]
    assert line.split()[:2] == [f"hot-{uid}", "cpu_high"] and "FIRING" in line and "97.5" in line
    assert fleet.run("alerts", "list", "--worker", worker["id"], "--state", "resolved").stdout == ""
    assert fleet.run("alerts", "list", "--state", "asleep").returncode == 2

    silence = fleet.json("silences", "create", "--worker", worker["id"], "--rule", "cpu_high", "--for", "2h",
                         "--comment", f"maintenance {uid}")
    assert silence["worker_id"] == worker["id"] and silence["comment"] == f"maintenance {uid}"
    listed = fleet.run("silences", "list").stdout
    assert silence["id"] in listed and f"maintenance {uid}" in listed and "in 1h59m" in listed

    deleted = fleet.run("silences", "delete", silence["id"])
    assert deleted.returncode == 0, deleted.stderr
    assert silence["id"] not in [s["id"] for s in fleet.json("silences", "list")["silences"]]
    again = fleet.run("silences", "delete", silence["id"])
    assert again.returncode == 3 and again.stderr.startswith("error: NOT_FOUND: ")
    assert fleet.run("silences", "create", "--for", "2h").returncode == 2  # neither --worker nor --rule
    assert fleet.run("silences", "create", "--worker", worker["id"], "--for", "soon").returncode == 2


async def test_status_reports_services_workers_alerts_and_samples(fleet: Fleet, fleet_js: JetStreamContext,
                                                                  uid: str) -> None:
    worker = fleet.json("workers", "create", "--name", f"seen-{uid}", "--region", "sa-east-1", "--instance-type",
                        "c5.large", "--ami", AMI)
    await publish_sample(fleet_js, worker, RUNNING, cpu_utilization=3.0)
    await eventually(lambda: fleet.json("workers", "get", worker["id"])["status"] == "WORKER_STATUS_RUNNING",
                     timeout=60)

    report = fleet.json("status")
    assert {name: s["health"] for name, s in report["services"].items()} == {"registry": "SERVING",
                                                                              "notifier": "SERVING"}
    assert report["by_region"]["sa-east-1"] == {"RUNNING": 1}
    assert report["total"] == sum(report["by_status"].values()) >= 1
    assert report["samples"]["oldest_age"] is not None and report["ok"] is True

    screen = fleet.run("status")
    assert screen.returncode == 0, screen.stdout + screen.stderr
    assert screen.stdout.count("SERVING") == 2 and "sa-east-1" in screen.stdout and "All fine." in screen.stdout
    assert "Alerts firing:" in screen.stdout and "Samples:" in screen.stdout

    half = fleet.run("status", CMLMON_NOTIFIER=f"127.0.0.1:{free_port()}")
    assert half.returncode == 1
    assert "notifier: UNAVAILABLE: cannot reach the notifier" in half.stdout and "Not fine" in half.stdout
    assert "sa-east-1" in half.stdout, "what the registry knows is still shown"
