"""`python -m registry` processes for end-to-end tests, stopped (SIGTERM, then kill) at the end of each test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

AMI = "ami-12c6146b"


class Registry:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "registry"], env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def launch(nats_url: str, aws_endpoint: str, tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    started: list[Registry] = []

    def start(port: int, **extra: str) -> Registry:
        env = {**os.environ, "NATS_URL": nats_url, "AWS_ENDPOINT_URL": aws_endpoint, "GRPC_PORT": str(port),
               "METRICS_PORT": "0", "LOG_FORMAT": "text", **extra}
        registry = Registry(env, tmp_path / f"registry-{len(started)}.log")
        started.append(registry)
        return registry

    yield start
    for registry in started:
        registry.stop()
