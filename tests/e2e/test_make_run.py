"""`make run` as a newcomer uses it: the supervisor starts everything, alerts for hot demo workers appear
within a minute, and Ctrl-C stops every process it started, leaving no busy port. At every other moment it
behaves too: Ctrl-C during start-up, a service that dies, a port already taken, real AWS without
credentials."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cmlmon_dev.servers import free_port

pytestmark = pytest.mark.e2e

StartRun = Callable[..., "MakeRun"]
PORT_SETTINGS = ("NATS_PORT", "AWS_SIM_PORT", "REGISTRY_GRPC_PORT", "NOTIFIER_GRPC_PORT", "REGISTRY_METRICS_PORT",
                 "COLLECTOR_METRICS_PORT", "NOTIFIER_METRICS_PORT", "DEMO_WEBHOOK_PORT")


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    rows = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    table = {}
    for row in rows.split("\n"):
        if row.strip():
            pid, ppid, args = [*row.split(None, 2), ""][:3]
            table[int(pid)] = (int(ppid), args)
    return table


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process below root."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = table[child][1]
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class MakeRun:
    """`python -m cmlmon_dev.run` (what `make run` runs) on free ports, its output collected line by line."""

    def __init__(self, tmp_path: Path, **settings: str | None) -> None:
        """settings override the environment; None removes a variable."""
        self.ports = {name: free_port() for name in PORT_SETTINGS}
        env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "AWS_ENDPOINT_URL")}
        env.update({k: str(v) for k, v in self.ports.items()})
        env["WORKER_METRICS_POLL_INTERVAL"] = "5"
        env["RUN_STATE_DIR"] = str(tmp_path / "run")
        env.update({k: v for k, v in settings.items() if v is not None})
        env = {k: v for k, v in env.items() if settings.get(k, "") is not None}
        self.state_dir = Path(env["RUN_STATE_DIR"])
        self.proc = subprocess.Popen([sys.executable, "-m", "cmlmon_dev.run"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        self.lines.extend(iter(self.proc.stdout.readline, ""))

    def output(self, last: int = 80) -> str:
        return "".join(self.lines[-last:])

    def wait_for_line(self, pattern: str, timeout: float) -> str:
        """The first output line matching pattern; fails when make run exits or timeout passes first."""
        found = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found.search(line):
                    return line
            assert self.proc.poll() is None, f"make run exited ({self.proc.returncode}):\n{self.output()}"
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n{self.output()}")

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"make run still running after {timeout}s:\n{self.output()}") from None
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[StartRun]:
    started: list[MakeRun] = []

    def start(**settings: str | None) -> MakeRun:
        run = MakeRun(tmp_path, **settings)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()


def assert_all_gone(pids: dict[int, str]) -> None:
    orphans = {pid: cmd for pid, cmd in pids.items() if alive(pid)}
    assert not orphans, f"processes left running after stop: {orphans}"


def test_make_run_shows_alerts_and_stops_cleanly(make_run: StartRun) -> None:
    run = make_run()
    run.wait_for_line("cmlmon is running", 120)
    alert = run.wait_for_line(r"ALERT received: firing (cpu_high|memory_high) on ", 60)
    assert any(name in alert for name in ("cml-east-2", "cml-east-3", "cml-west-2")), alert
    started = descendants(run.proc.pid)
    assert len(started) >= 6, started  # nats, aws-sim, registry, 2 collectors, notifier
    run.ctrl_c()
    assert run.wait(60) == 0, run.output(40)
    assert_all_gone(started)
    # With no process of ours left, a port still answering would belong to someone else (gRPC binds with
    # SO_REUSEPORT, and other suites on this machine pick free ports too): look twice before blaming us.
    busy = [name for name, port in run.ports.items() if port_busy(port)]
    if busy:
        time.sleep(2)
        busy = [name for name in busy if port_busy(run.ports[name])]
    assert not busy, f"ports still busy after stop: {busy}"


def test_ctrl_c_during_start_up_stops_everything(make_run: StartRun) -> None:
    # A NATS nobody serves: the registry never becomes ready, so make run is stuck in start-up for good
    # (it used to wait out a 60 s readiness timeout first).
    run = make_run(NATS_URL=f"nats://127.0.0.1:{free_port()}", COLLECTOR_REPLICAS="1")
    run.wait_for_line(r"^notifier\s*\|", 60)  # every process is up, the registry is not serving
    started = descendants(run.proc.pid)
    assert any(" -m registry" in cmd for cmd in started.values()), started
    run.ctrl_c()
    assert run.wait(30) == 0, run.output()
    assert "cmlmon is running" not in "".join(run.lines)
    assert_all_gone(started)


def test_a_service_that_dies_stops_everything_with_a_failure(make_run: StartRun) -> None:
    run = make_run(COLLECTOR_REPLICAS="1")
    run.wait_for_line("cmlmon is running", 120)
    started = descendants(run.proc.pid)
    [collector] = [pid for pid, cmd in started.items() if cmd.endswith(" -m collector")]
    os.kill(collector, signal.SIGKILL)
    assert run.wait(60) == 1, run.output()
    [reported] = [line for line in run.lines if line.startswith("make run: ")]
    assert "collector-1 was killed by SIGKILL" in reported and "stopping everything" in reported, reported
    assert_all_gone(started)


def test_a_busy_port_is_named_and_nothing_starts(make_run: StartRun) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = make_run(NOTIFIER_GRPC_PORT=str(port))
        assert run.wait(60) == 2, run.output()
    assert len(run.lines) == 1, run.output()
    assert re.search(rf"\b{port} \(NOTIFIER_GRPC_PORT\)", run.lines[0]), run.lines[0]
    assert not run.state_dir.exists()  # nothing was started: not even the NATS store was made


def test_real_aws_without_credentials_is_reported_once(make_run: StartRun, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    no_aws: dict[str, str | None] = {k: None for k in os.environ if k.startswith("AWS_")}
    run = make_run(RUN_AWS="real", **no_aws, AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty),
                   AWS_EC2_METADATA_DISABLED="true", BOTO_CONFIG=str(empty), HOME=str(tmp_path))
    assert run.wait(60) == 2, run.output()
    # (A port taken meanwhile by another program on this machine would be a line of its own.)
    problems = [line for line in run.lines if line.startswith("make run: ") and "credentials" in line]
    assert len(problems) == 1, run.output()
    problem = problems[0]
    assert "no AWS credentials were found" in problem, problem
    for source in ("environment (AWS_ACCESS_KEY_ID", f"shared credentials file {empty}", f"config file {empty}",
                   "EC2 instance role"):
        assert source in problem, (source, problem)
    assert not run.state_dir.exists()


def test_a_real_run_keeps_its_nats_store_apart_from_the_simulation(make_run: StartRun, aws_endpoint: str,
                                                                   tmp_path: Path) -> None:
    state_dir = tmp_path / "run"
    demo_state = state_dir / "nats-sim" / "jetstream" / "left-by-a-demo-run"
    demo_state.parent.mkdir(parents=True)
    demo_state.write_text("")
    # moto stands in for real AWS here (credentials it accepts); what matters is where NATS keeps its state.
    run = make_run(RUN_AWS="real", RUN_STATE_DIR=str(state_dir), AWS_ENDPOINT_URL=aws_endpoint,
                   AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", COLLECTOR_REPLICAS="1")
    run.wait_for_line(r"^registry\s*\|", 60)  # NATS is up (the services start after it), the store in place
    run.ctrl_c()
    assert run.wait(30) == 0, run.output()
    assert (run.state_dir / "nats-real" / "jetstream").is_dir()
    assert demo_state.exists()  # the simulation's store is neither used nor wiped
    assert "simulated AWS" not in "".join(run.lines)
