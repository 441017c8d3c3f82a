"""Services as separate processes, as deployed: `python -m <service>` with settings in the environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cmlmon_dev.servers import NatsServer, free_port


class ServiceProcess:
    """`python -m <name>` started at once with env as its settings; its output goes to log_path."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", name], env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after timeout; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class ServiceLauncher:
    base_env: dict[str, str]
    tmp: Path
    started: list[ServiceProcess] = field(default_factory=list)

    def start(self, name: str, **env: object) -> ServiceProcess:
        merged = {**self.base_env, **{k: str(v) for k, v in env.items()}}
        proc = ServiceProcess(name, merged, self.tmp / f"{name}-{len(self.started)}.log")
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server for this test alone: durable consumers and schedules of one end-to-end run must not
    leak into the next."""
    with NatsServer(tmp_path / "jetstream", log_file=tmp_path / "nats-server.log") as server:
        yield server


@pytest.fixture
def services(own_nats: NatsServer, aws_endpoint: str, tmp_path: Path) -> Iterator[ServiceLauncher]:
    env = dict(os.environ)
    env.update({
        "NATS_URL": own_nats.url,
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "METRICS_PORT": "0",
    })
    launcher = ServiceLauncher(env, tmp_path)
    try:
        yield launcher
    finally:
        launcher.stop_all()
        for proc in launcher.started:  # shown by pytest only when the test failed
            print(f"----- {proc.name} log -----\n{proc.log()}")


@pytest.fixture
def grpc_port() -> int:
    return free_port()
