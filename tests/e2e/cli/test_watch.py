"""`cmlmon workers watch` keeps following: in a real pseudo-terminal its table changes in place when a worker
changes, and with -o json every change is one more line; the same process all along."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from typing import Any

import pytest
from nats.js import JetStreamContext

from tests.e2e.cli.support import AMI, RUNNING, Fleet, publish_sample
from tests.support import eventually

pytestmark = pytest.mark.e2e


def create(fleet: Fleet, name: str, region: str) -> dict[str, Any]:
    worker: dict[str, Any] = fleet.json("workers", "create", "--name", name, "--region", region,
                                        "--instance-type", "c5.large", "--ami", AMI)
    return worker


def row(text: str, worker_id: str) -> str:
    """The last line drawn for the worker: the screen as it is now."""
    rows = [line for line in text.splitlines() if worker_id in line]
    return rows[-1] if rows else ""


async def test_live_table_shows_a_stop_made_from_another_command(fleet: Fleet, fleet_js: JetStreamContext,
                                                                 uid: str) -> None:
    # a region of its own: the table shows this test's workers only, and fits the terminal
    worker = create(fleet, f"watched-{uid}", "ap-southeast-2")
    await publish_sample(fleet_js, worker, RUNNING, cpu_utilization=12.5)
    await eventually(lambda: fleet.json("workers", "get", worker["id"])["status"] == "WORKER_STATUS_RUNNING",
                     timeout=60)

    term = fleet.terminal("workers", "watch", "--region", "ap-southeast-2")
    try:
        screen = term.read_until(lambda t: "RUNNING" in row(t, worker["id"]))
        assert "12.5%" in row(screen, worker["id"]) and "Watching" in screen
        assert b"\x1b[" in term.raw, "a terminal gets colour"

        mark = len(term.raw)
        stopped = fleet.run("workers", "stop", worker["id"])
        assert stopped.returncode == 0, stopped.stderr
        after = term.read_until(lambda t: "STOPPING" in row(t, worker["id"]), since=mark)
        assert "stopped" in after  # the header names the last change: the worker's "stopped" event
        assert term.process.poll() is None, "the same watch process, still running"

        term.process.send_signal(signal.SIGINT)
        assert term.wait() == 130
        assert "Traceback" not in term.text
    finally:
        term.close()


async def test_json_watch_prints_one_document_per_event(fleet: Fleet, fleet_js: JetStreamContext, uid: str) -> None:
    worker = create(fleet, f"json-{uid}", "ap-northeast-1")
    watcher = await asyncio.create_subprocess_exec(
        *fleet.argv("workers", "watch", "--region", "ap-northeast-1", "-o", "json"), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=fleet.env(), cwd=fleet.cwd)
    assert watcher.stdout is not None
    try:
        async def next_event() -> dict[str, Any]:
            assert watcher.stdout is not None
            line = await asyncio.wait_for(watcher.stdout.readline(), 60)
            assert line.endswith(b"\n"), line
            event: dict[str, Any] = json.loads(line)
            return event

        first = await next_event()
        assert (first["worker"]["id"], first["initial"]) == (worker["id"], True)
        await publish_sample(fleet_js, worker, RUNNING)
        change = await next_event()
        while change["worker"]["status"] != "WORKER_STATUS_RUNNING":  # an unrelated update may come first
            change = await next_event()
        assert change["initial"] is False and change["event_type"] == "WORKER_EVENT_TYPE_STATUS_CHANGED"
        assert change["worker"]["status"] == "WORKER_STATUS_RUNNING"
    finally:
        watcher.kill()
        await watcher.wait()
