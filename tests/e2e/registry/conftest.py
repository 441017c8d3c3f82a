"""`python -m registry` processes for end-to-end tests (the launcher of tests/e2e/conftest.py on the session's
NATS), stopped at the end of each test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ServiceLauncher, ServiceProcess

AMI = "ami-12c6146b"


@pytest.fixture
def launch(nats_url: str, aws_endpoint: str, tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start `python -m registry` processes on the session's NATS; each is stopped at the end of the test."""
    launcher = ServiceLauncher({**os.environ, "NATS_URL": nats_url, "AWS_ENDPOINT_URL": aws_endpoint,
                                "METRICS_PORT": "0", "LOG_FORMAT": "text"}, tmp_path)

    def start(port: int, module: str = "registry", **extra: str) -> ServiceProcess:
        return launcher.start(module, GRPC_PORT=port, **extra)

    yield start
    launcher.stop_all()
