"""Per-method gRPC metrics, read from the /metrics of `python -m registry` after real calls: unary and server
streaming, OK, NOT_FOUND, INVALID_ARGUMENT and calls the admission check refuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import registry_service_pb2_grpc as rs_grpc
from cmlmon_core.auth import Role, token_entry, write_auth_file
from cmlmon_dev.servers import free_port, wait_for_port
from tests.support import eventually

pytestmark = pytest.mark.integration

SERVICE = "cml.monitor.v1.WorkerRegistryService"
TOKEN = "viewer-token-for-metrics-test"


@pytest.fixture(scope="module")
def registry_ports(nats_url: str, aws_endpoint: str, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[str, int]]:
    """A registry process with a viewer token; yields its gRPC address and metrics port."""
    home = tmp_path_factory.mktemp("registry-metrics")
    auth = home / "auth.yaml"
    write_auth_file(auth, [token_entry(TOKEN, "metrics-test", Role.VIEWER)])
    port, metrics = free_port(), free_port()
    env = {**os.environ, "NATS_URL": nats_url, "AWS_ENDPOINT_URL": aws_endpoint, "GRPC_PORT": str(port),
           "GRPC_AUTH": "required", "GRPC_AUTH_FILE": str(auth), "METRICS_PORT": str(metrics),
           "METRICS_HOST": "127.0.0.1", "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}
    log = home / "registry.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "registry"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 60)
        yield f"127.0.0.1:{port}", metrics
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(20) == 0, Path(log).read_text()
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_calls_are_counted_by_method_type_and_code(registry_ports: tuple[str, int]) -> None:
    address, metrics_port = registry_ports
    auth = (("authorization", f"Bearer {TOKEN}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rs_grpc.WorkerRegistryServiceStub(channel)
        await stub.ListWorkers(rs.ListWorkersRequest(page_size=10), metadata=auth)
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetWorker(rs.GetWorkerRequest(id="w-00000000000000000000"), metadata=auth)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.ListWorkers(rs.ListWorkersRequest())
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as viewer:
            await stub.ImportWorker(rs.ImportWorkerRequest(region="us-east-1", instance_id="i-0123456789abcdef0"),
                                    metadata=auth)
        assert viewer.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as bad_region:
            async for _ in stub.WatchWorkers(rs.WatchWorkersRequest(region="no such region!"), metadata=auth):
                pass
        assert bad_region.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    unary = {"grpc_type": "unary", "grpc_service": SERVICE}
    stream = {"grpc_type": "server_stream", "grpc_service": SERVICE, "grpc_method": "WatchWorkers"}
    samples = scrape(metrics_port)
    handled = "grpc_server_handled_total"
    assert value(samples, handled, **unary, grpc_method="GetWorker", grpc_code="NOT_FOUND") == 3
    assert value(samples, handled, **unary, grpc_method="ListWorkers", grpc_code="OK") == 1
    assert value(samples, handled, **unary, grpc_method="ListWorkers", grpc_code="UNAUTHENTICATED") == 1
    assert value(samples, handled, **unary, grpc_method="ImportWorker", grpc_code="PERMISSION_DENIED") == 1
    assert value(samples, handled, **stream, grpc_code="INVALID_ARGUMENT") == 1
    assert value(samples, "grpc_server_started_total", **unary, grpc_method="GetWorker") == 3
    assert value(samples, "grpc_server_started_total", **stream) == 1
    assert value(samples, "grpc_server_handling_seconds_count", **unary, grpc_method="GetWorker") == 3
    assert value(samples, "grpc_server_handling_seconds_bucket", **unary, grpc_method="GetWorker", le="+Inf") == 3


async def test_a_watch_stream_is_counted_when_it_ends(registry_ports: tuple[str, int]) -> None:
    address, metrics_port = registry_ports
    stream = {"grpc_type": "server_stream", "grpc_service": SERVICE, "grpc_method": "WatchWorkers"}
    before = value(scrape(metrics_port), "grpc_server_started_total", **stream)
    async with grpc.aio.insecure_channel(address) as channel:
        call = rs_grpc.WorkerRegistryServiceStub(channel).WatchWorkers(
            rs.WatchWorkersRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),))
        await eventually(lambda: value(scrape(metrics_port), "grpc_server_started_total", **stream) > before)
        assert value(scrape(metrics_port), "grpc_server_handled_total", **stream, grpc_code="CANCELLED") == 0
        call.cancel()
    cancelled = await eventually(lambda: value(scrape(metrics_port), "grpc_server_handled_total", **stream,
                                               grpc_code="CANCELLED"))
    assert cancelled == 1
