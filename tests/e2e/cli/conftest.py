"""The installed `cmlmon` console script run as a subprocess against a registry and a notifier running as
processes (`python -m ...`) on a NATS of their own and the session's moto server; started once for every
command line test (tests keep apart by unique names, tags and regions)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.js import JetStreamContext

from cmlmon_dev.servers import NatsServer, free_port, wait_for_port
from tests.e2e.cli.support import CMLMON, Fleet
from tests.e2e.conftest import ServiceLauncher


@pytest.fixture(scope="session")
def fleet(aws_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    assert CMLMON.exists(), f"{CMLMON} is missing: `make install` installs the console script"
    tmp = tmp_path_factory.mktemp("cli")
    registry_port, notifier_port = free_port(), free_port()
    with NatsServer(tmp / "jetstream", log_file=tmp / "nats-server.log") as server:
        launcher = ServiceLauncher({**os.environ, "NATS_URL": server.url, "AWS_ENDPOINT_URL": aws_endpoint,
                                    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                                    "METRICS_PORT": "0", "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING",
                                    # open services: what the client sends is tested in test_connection.py
                                    "GRPC_AUTH": "none"}, tmp)
        try:
            launcher.start("registry", GRPC_PORT=registry_port, GRPC_HOST="127.0.0.1")
            # one breaching sample fires an alert at once
            launcher.start("notifier", GRPC_PORT=notifier_port, GRPC_HOST="127.0.0.1", ALERT_FOR_SECONDS=0,
                           ALERT_MIN_SAMPLES=1, ALERT_WINDOW_SAMPLES=1)
            wait_for_port(registry_port, 60)
            wait_for_port(notifier_port, 60)
            work = tmp / "cwd"  # no .run/token of the checkout is picked up from here
            work.mkdir()
            yield Fleet(f"127.0.0.1:{registry_port}", f"127.0.0.1:{notifier_port}", server.url, work)
        finally:
            launcher.stop_all()
            for proc in launcher.started:  # shown by pytest only when a test failed
                print(f"----- {proc.name} log -----\n{proc.log()}")


@pytest.fixture
async def fleet_js(fleet: Fleet) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(fleet.nats_url)
    try:
        yield nc.jetstream()
    finally:
        await nc.drain()


