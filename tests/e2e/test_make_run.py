"""`make run` as a newcomer uses it: the supervisor starts everything, alerts for hot demo workers appear
within a minute, and Ctrl-C stops every process it started, leaving no busy port."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cmlmon_dev.servers import free_port

pytestmark = pytest.mark.e2e


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def descendants(root: int) -> set[int]:
    rows = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[int]] = {}
    for row in rows.split("\n"):
        if row.strip():
            pid, ppid = map(int, row.split())
            children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_make_run_shows_alerts_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {name: free_port() for name in (
        "NATS_PORT", "AWS_SIM_PORT", "REGISTRY_GRPC_PORT", "NOTIFIER_GRPC_PORT", "REGISTRY_METRICS_PORT",
        "COLLECTOR_METRICS_PORT", "NOTIFIER_METRICS_PORT", "DEMO_WEBHOOK_PORT",
        "AUTOPILOT_METRICS_PORT", "DEMO_CML_PORT")}
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "AWS_ENDPOINT_URL")}
    env.update({k: str(v) for k, v in ports.items()})
    env["WORKER_METRICS_POLL_INTERVAL"] = "5"
    env["RUN_STATE_DIR"] = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-m", "cmlmon_dev.run"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("cmlmon is running" in x for x in lines):
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.5)
        assert any("cmlmon is running" in x for x in lines), "".join(lines)
        started = time.monotonic()
        alert = re.compile(r"ALERT received: firing (cpu_high|memory_high) on ")
        while time.monotonic() - started < 60 and not any(alert.search(x) for x in lines):
            time.sleep(0.5)
        assert any(alert.search(x) for x in lines), "no alert within a minute:\n" + "".join(lines[-80:])
        hot = {"cml-east-2", "cml-east-3", "cml-west-2"}
        assert any(name in x for x in lines if alert.search(x) for name in hot)
        started_pids = descendants(proc.pid)
        assert len(started_pids) >= 6, started_pids  # nats, aws-sim, registry, 2 collectors, notifier
    finally:
        started_pids = descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        stopped = time.monotonic()
        proc.wait(60)
        elapsed = time.monotonic() - stopped
        reader.join(5)
        proc.stdout.close()  # type: ignore[union-attr]
    assert proc.returncode == 0, "".join(lines[-40:])
    assert elapsed < 20, f"took {elapsed:.1f}s to stop"
    orphans = [pid for pid in started_pids if alive(pid)]
    assert not orphans, f"processes left running after stop: {orphans}"
    # With no process of ours left, a port still answering would belong to someone else (gRPC binds with
    # SO_REUSEPORT, and other suites on this machine pick free ports too): look twice before blaming us.
    busy = [name for name, port in ports.items() if port_busy(port)]
    if busy:
        time.sleep(2)
        busy = [name for name in busy if port_busy(ports[name])]
    assert not busy, f"ports still busy after stop: {busy}"
