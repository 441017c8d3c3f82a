"""Every panel of both Grafana dashboards proven: each query, template variables substituted, is a valid
PromQL expression for promtool (as a recording rule) and returns data from a real Prometheus (Debian's
`prometheus`, installed by .ci/run) that scrapes a running stack every second: registry, collector and notifier
processes, moto behind a proxy that throttles every other DescribeInstanceStatus, a webhook that refuses
connections (deliveries dead-lettered), hot workers (alerts fire) and a NOT_FOUND call (a gRPC error)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import grpc
import httpx
import pytest
import yaml
from aiohttp import web

from cml.monitor.v1 import registry_service_pb2 as reg_pb2
from cml.monitor.v1 import registry_service_pb2_grpc as reg_grpc
from cmlmon_dev.servers import free_port, wait_for_port
from tests.e2e.conftest import ServiceLauncher
from tests.e2e.test_pipeline import REGION, launch_hot_instance, put_cpu, wait_serving
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
VARIABLES = {"region": ".*", "worker": ".*", "__rate_interval": "10s"}  # "All", and 10 scrapes of 1 s
# Named by the brief, exported by the shared consumer on the consumers branch: until that code is in this tree
# no service can export them, so their panels are checked for syntax only.
AWAITED = ("cmlmon_consumer_pending", "cmlmon_consumer_ack_pending")

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="prometheus/promtool not installed (Debian package prometheus; .ci/run installs it)")]


def queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expression with the template variables substituted) for every target."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = re.sub(r"\$\{?(\w+)\}?", lambda m: VARIABLES[m.group(1)], target["expr"])
                found.append((dashboard["title"], panel["title"], expr))
    return found


def exported_here(name: str) -> bool:
    return any(name in p.read_text() for p in (ROOT / "libs").rglob("*.py")) or any(
        name in p.read_text() for p in (ROOT / "services").rglob("*.py"))


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    assert len(DASHBOARDS) == 2 and len(queries()) >= 30
    rules = {"groups": [{"name": "panels", "rules": [
        {"record": f"cmlmon:panel_{i}", "expr": expr} for i, (_, _, expr) in enumerate(queries())]}]}
    (tmp_path / "panels.yaml").write_text(yaml.safe_dump(rules))
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, "check", "rules", "panels.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the stack ------------------------------------------------------------------------------------------------

THROTTLED = ('<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>RequestLimitExceeded</Code>'
             '<Message>Request limit exceeded.</Message></Error></Errors><RequestID>throttled</RequestID></Response>')


@pytest.fixture
async def throttling_aws(aws_endpoint: str) -> AsyncIterator[str]:
    """moto behind a proxy that answers every other DescribeInstanceStatus with RequestLimitExceeded."""
    calls = 0

    async def forward(request: web.Request) -> web.Response:
        nonlocal calls
        body = await request.read()
        if b"Action=DescribeInstanceStatus" in body:
            calls += 1
            if calls % 2:
                return web.Response(status=503, text=THROTTLED, content_type="text/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with httpx.AsyncClient(timeout=30) as client:
            reply = await client.request(request.method, f"{aws_endpoint}{request.path_qs}", content=body,
                                         headers=headers)
        return web.Response(status=reply.status_code, body=reply.content,
                            headers={"Content-Type": reply.headers.get("content-type", "text/xml")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[int, dict[str, int]]]:
    """Debian's Prometheus scraping the three services' metrics ports every second."""
    ports = {"registry": free_port(), "collector": free_port(), "notifier": free_port()}
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": f"cmlmon-{name}", "static_configs": [{"targets": [f"127.0.0.1:{p}"]}]}
                                 for name, p in ports.items()]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    assert PROMETHEUS is not None
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_for_port(port, 30)
        yield port, ports
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def put_memory(endpoint: str, instance_id: str, value: float) -> None:
    """What the CloudWatch agent writes (CWAgent mem_used_percent by InstanceId, the collector's default)."""
    cw: Any = boto3.client("cloudwatch", region_name=REGION, endpoint_url=endpoint)
    cw.put_metric_data(Namespace="CWAgent", MetricData=[{
        "MetricName": "mem_used_percent", "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
        "Timestamp": datetime.now(UTC), "Value": value, "Unit": "Percent"}])


async def query(http: httpx.AsyncClient, port: int, expr: str) -> list[Any]:
    reply = (await http.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr})).json()
    assert reply["status"] == "success", (expr, reply)
    return list(reply["data"]["result"])


async def test_every_panel_returns_data_from_a_prometheus_scraping_the_stack(
        services: ServiceLauncher, aws_endpoint: str, throttling_aws: str, grpc_port: int,
        prometheus: tuple[int, dict[str, int]], uid: str) -> None:
    prom_port, metrics = prometheus
    hot = [launch_hot_instance(aws_endpoint, f"panel-{uid}-{n}") for n in range(2)]
    for instance_id in hot:
        put_cpu(aws_endpoint, instance_id, 97.0)
        put_memory(aws_endpoint, instance_id, 42.0)
    fast = {"WORKER_METRICS_POLL_INTERVAL": 2, "CLOUDWATCH_DELAY_SECONDS": 0, "METRICS_HOST": "127.0.0.1"}
    services.start("registry", GRPC_PORT=grpc_port, METRICS_PORT=metrics["registry"], **fast)
    services.start("collector", REGISTRY_ADDRESS=f"127.0.0.1:{grpc_port}", AWS_ENDPOINT_URL=throttling_aws,
                   METRICS_PORT=metrics["collector"], AWS_RETRY_BASE_SECONDS=0.05, **fast)
    services.start("notifier", GRPC_PORT=0, METRICS_PORT=metrics["notifier"], ALERT_SWEEP_SECONDS=1,
                   ALERT_MIN_SAMPLES=1, ALERT_WINDOW_SAMPLES=1, ALERT_FOR_SECONDS=0,
                   WORKER_NOTIFICATION_WEBHOOKS=f"http://127.0.0.1:{free_port()}/refused",
                   DELIVERY_MAX_ATTEMPTS=2, DELIVERY_BACKOFF_INITIAL_SECONDS=0.1, **fast)
    address = f"127.0.0.1:{grpc_port}"
    await wait_serving(address)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reg_grpc.WorkerRegistryServiceStub(channel)
        for instance_id in hot:
            await stub.ImportWorker(reg_pb2.ImportWorkerRequest(region=REGION, instance_id=instance_id), timeout=20)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetWorker(reg_pb2.GetWorkerRequest(id="w-00000000000000000000"), timeout=10)

    checked = [(board, title, expr) for board, title, expr in queries()
               if not any(name in expr and not exported_here(name) for name in AWAITED)]
    async with httpx.AsyncClient(timeout=10) as http:
        async def empty() -> list[str]:
            results = await asyncio.gather(*(query(http, prom_port, expr) for _, _, expr in checked))
            return [f"{board} / {title}: {expr}" for (board, title, expr), r in zip(checked, results, strict=True)
                    if not r]

        missing: list[str] = []

        async def all_answered() -> bool:
            missing[:] = await empty()
            return not missing

        try:
            await eventually(all_answered, timeout=75, interval=2)
        except AssertionError:
            raise AssertionError("panels without data:\n" + "\n".join(missing)) from None
