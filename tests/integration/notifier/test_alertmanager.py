"""A real Alertmanager (Debian's prometheus-alertmanager) shows the alert, then its resolution; Slack and
PagerDuty Events v2 payloads reach a receiver standing in for those services."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from cmlmon_dev.servers import free_port, wait_for_port
from tests.integration.notifier.support import (
    eventually,
    make_worker,
    notifier_settings,
    publish_sample,
    receiving,
    running_notifier,
)

pytestmark = pytest.mark.integration
CONFIG = "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n"


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.skip("prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)")
    (tmp_path / "am.yml").write_text(CONFIG)
    port = free_port()
    log = (tmp_path / "am.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def am_alerts(base: str, worker_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/api/v2/alerts", params={"filter": f'worker_id="{worker_id}"'}, timeout=5)
    response.raise_for_status()
    alerts: list[dict[str, Any]] = response.json()
    return alerts


def ends_later_than(alert: dict[str, Any], seconds: float) -> bool:
    ends = datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00"))
    return (ends - datetime.now(UTC)).total_seconds() > seconds


async def test_alertmanager_slack_and_pagerduty(alertmanager: str, js: JetStreamContext, nats_url: str,
                                                uid: str) -> None:
    worker = make_worker(f"a-{uid}", name=f"am-{uid}")
    async with receiving() as slack, receiving() as pagerduty:
        settings = notifier_settings(nats_url, uid, alertmanager_url=alertmanager, slack_webhook_url=slack.url,
                                     pagerduty_routing_key="R0UT1NG", pagerduty_url=pagerduty.url)
        async with running_notifier(settings):
            await publish_sample(js, worker, cpu=98.0)
            shown = await eventually(lambda: am_alerts(alertmanager, worker.id))
            assert shown[0]["labels"]["alertname"] == "cpu_high"
            assert shown[0]["labels"]["severity"] == "warning"
            assert shown[0]["labels"]["instance_id"] == worker.instance_id
            assert shown[0]["status"]["state"] == "active" and ends_later_than(shown[0], 3600)
            assert "98" in shown[0]["annotations"]["summary"]
            await publish_sample(js, worker, cpu=3.0)
            # Alertmanager lists only unresolved alerts: once endsAt has passed the alert leaves the list
            # (with a 24 h endsAt on firing, it would stay there if the resolution never arrived).
            await eventually(lambda: not am_alerts(alertmanager, worker.id), timeout=30)
            await eventually(lambda: len(pagerduty.for_worker(worker.id)) == 2)
            await eventually(lambda: len(slack.for_worker(worker.id)) == 2)
    trigger, resolve = (r.json() for r in pagerduty.for_worker(worker.id))
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == f"cmlmon/{worker.id}.cpu_high"
    assert trigger["routing_key"] == "R0UT1NG" and trigger["payload"]["source"] == worker.instance_id
    texts = [r.json()["text"] for r in slack.for_worker(worker.id)]
    assert "FIRING" in texts[0] and "RESOLVED" in texts[1]
