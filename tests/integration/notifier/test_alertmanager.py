"""A real Alertmanager (Debian's prometheus-alertmanager) shows the alert, then its resolution; it keeps a firing
alert active past its resolve_timeout while the notifier re-sends it, and resolves it soon after the notifier
stops. Slack and PagerDuty Events v2 payloads reach a receiver standing in for those services."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
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
RESOLVE_TIMEOUT = 2.0  # Alertmanager's own: an alert not re-sent within it would be resolved (were endsAt unset)
CONFIG = f"global:\n  resolve_timeout: {RESOLVE_TIMEOUT:g}s\n" \
    "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n"


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


def ends_at(alert: dict[str, Any]) -> float:
    return datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00")).timestamp()


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
            # endsAt: four re-send periods (the default, 60 s) ahead, not a day
            assert shown[0]["status"]["state"] == "active" and 200 < ends_at(shown[0]) - time.time() <= 240
            assert "98" in shown[0]["annotations"]["summary"]
            await publish_sample(js, worker, cpu=3.0)
            # Alertmanager lists only unresolved alerts: once endsAt has passed the alert leaves the list
            # (with a 4 min endsAt on firing, it would stay there minutes if the resolution never arrived).
            await eventually(lambda: not am_alerts(alertmanager, worker.id), timeout=30)
            await eventually(lambda: len(pagerduty.for_worker(worker.id)) == 2)
            await eventually(lambda: len(slack.for_worker(worker.id)) == 2)
    trigger, resolve = (r.json() for r in pagerduty.for_worker(worker.id))
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == f"cmlmon/{worker.id}.cpu_high"
    assert trigger["routing_key"] == "R0UT1NG" and trigger["payload"]["source"] == worker.instance_id
    texts = [r.json()["text"] for r in slack.for_worker(worker.id)]
    assert "FIRING" in texts[0] and "RESOLVED" in texts[1]


async def test_firing_alert_is_re_sent_and_resolves_after_the_notifier_stops(alertmanager: str, js: JetStreamContext,
                                                                             nats_url: str, uid: str) -> None:
    period = 1.5  # endsAt 6 s ahead, re-sent every 1.5 s
    worker = make_worker(f"rs-{uid}")
    settings = notifier_settings(nats_url, uid, alertmanager_url=alertmanager, alertmanager_resend_seconds=period)
    async with running_notifier(settings):
        await publish_sample(js, worker, cpu=98.0)
        [first] = await eventually(lambda: am_alerts(alertmanager, worker.id))
        first_end = ends_at(first)
        assert first_end - time.time() <= 4 * period + 1
        # Past the first endsAt (and many times resolve_timeout) the alert is still active: it was re-sent,
        # and every re-send moved endsAt on.
        await asyncio.sleep(first_end + period - time.time())
        [later] = am_alerts(alertmanager, worker.id)
        assert later["status"]["state"] == "active" and ends_at(later) > first_end + period
        assert time.time() - datetime.fromisoformat(later["startsAt"].replace("Z", "+00:00")).timestamp() > (
            2 * RESOLVE_TIMEOUT)
    stopped = time.time()
    # No resolution was sent (the CPU is still high): Alertmanager resolves it by the last endsAt, within a few
    # re-send periods of the notifier stopping.
    await eventually(lambda: not am_alerts(alertmanager, worker.id), timeout=4 * period + 15)
    assert time.time() - stopped >= 1.0  # the stop itself resolved nothing: the last endsAt did
