"""Traces end to end: the three services, configured only by the standard OTEL_* environment, export to an
in-process OTLP/gRPC receiver, and one trace follows an imported worker from the ImportWorker call through
the registry's event, the collector's poll and sample, to the notifier's evaluation and the webhook delivery
of its first alert. Log lines written inside a span name it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from cml.monitor.v1 import registry_service_pb2 as reg_pb2
from cml.monitor.v1 import registry_service_pb2_grpc as reg_grpc
from cmlmon_dev.receiver import WebhookReceiver
from tests.e2e.conftest import ServiceLauncher
from tests.e2e.test_pipeline import REGION, launch_hot_instance, put_cpu, wait_serving
from tests.support import eventually

pytestmark = pytest.mark.e2e

IMPORT = "/cml.monitor.v1.WorkerRegistryService/ImportWorker"


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent: str


class Receiver(otlp_grpc.TraceServiceServicer):  # type: ignore[misc]
    """Keeps every span it is sent, with the service.name of its resource."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    async def Export(self, request: otlp.ExportTraceServiceRequest, context: Any
                     ) -> otlp.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                self.spans.extend(Span(attributes.get("service.name", ""), s.name, s.kind, s.trace_id.hex(),
                                       s.span_id.hex(), s.parent_span_id.hex()) for s in scope.spans)
        return otlp.ExportTraceServiceResponse()

    def one(self, service: str, name: str, trace_id: str) -> Span | None:
        found = [s for s in self.spans if (s.service, s.name, s.trace_id) == (service, name, trace_id)]
        return found[0] if found else None


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    found = Receiver()
    server = grpc.aio.server()
    otlp_grpc.add_TraceServiceServicer_to_server(found, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield found, port
    finally:
        await server.stop(0)


async def test_one_trace_from_import_to_alert_delivery(services: ServiceLauncher, aws_endpoint: str,
                                                       grpc_port: int, receiver: tuple[Receiver, int],
                                                       uid: str) -> None:
    spans, otlp_port = receiver
    instance_id = launch_hot_instance(aws_endpoint, f"traced-{uid}")
    put_cpu(aws_endpoint, instance_id, 98.0)
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}", "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_TRACES_SAMPLER": "parentbased_always_on"}
    # The import's trace goes on in the tick the collector publishes at once; the schedule's own ticks carry none
    # and, one message per subject, a scheduled tick replaces an unpolled traced one. An interval that divides no
    # minute, hour or day is an `@every` schedule: its first tick comes an interval after the import, long after
    # the test (60 s was a cron tick at every minute boundary, which did replace the traced tick whenever it fell
    # before the region's tick consumer started, seconds after the import on a busy box).
    polling = {"WORKER_METRICS_POLL_INTERVAL": 5000, "CLOUDWATCH_DELAY_SECONDS": 0}
    async with WebhookReceiver() as webhook:
        registry = services.start("registry", GRPC_PORT=grpc_port, **otel)
        services.start("collector", REGISTRY_ADDRESS=f"127.0.0.1:{grpc_port}", **polling, **otel)
        # the first sample alerts: the first poll is the one that continues the import's trace
        services.start("notifier", GRPC_PORT=0, WORKER_NOTIFICATION_WEBHOOKS=f"{webhook.url}/hook",
                       ALERT_FOR_SECONDS=0, ALERT_MIN_SAMPLES=1, ALERT_WINDOW_SAMPLES=1, **polling, **otel)
        address = f"127.0.0.1:{grpc_port}"
        await wait_serving(address)
        async with grpc.aio.insecure_channel(address) as channel:
            worker = (await reg_grpc.WorkerRegistryServiceStub(channel).ImportWorker(
                reg_pb2.ImportWorkerRequest(region=REGION, instance_id=instance_id), timeout=20)).worker
            # health is served on a traced server too, Watch included (a coroutine writing its stream), untraced
            health = health_pb2_grpc.HealthStub(channel)
            checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            watch = health.Watch(health_pb2.HealthCheckRequest())
            watched = await asyncio.wait_for(watch.read(), 10)
            watch.cancel()
            assert checked.status == watched.status == health_pb2.HealthCheckResponse.SERVING
            await reg_grpc.WorkerRegistryServiceStub(channel).GetWorker(reg_pb2.GetWorkerRequest(id=worker.id),
                                                                        timeout=20)  # a span after them
        await webhook.wait_for(lambda r: r.json().get("status") == "firing"
                               and r.json()["worker"]["id"] == worker.id, timeout=90)

        root = (await eventually(lambda: [s for s in spans.spans if s.name == IMPORT], timeout=30))[0]
        trace_id = root.trace_id
        assert (root.service, root.kind, root.parent) == ("registry", trace_pb2.Span.SPAN_KIND_SERVER, "")

        wanted = [("registry", "registry.publish_event"), ("collector", "collector.apply_worker_event"),
                  ("collector", "collector.poll_region"), ("collector", "collector.publish_sample"),
                  ("notifier", "notifier.evaluate"), ("notifier", "notifier.publish_alert")]

        def chain() -> list[Span] | None:
            found = [spans.one(service, name, trace_id) for service, name in wanted]
            delivered = [s for s in spans.spans if s.trace_id == trace_id and s.service == "notifier"
                         and s.name.startswith("notifier.deliver webhook")]
            return [*found, delivered[0]] if all(found) and delivered else None  # type: ignore[list-item]

        linked = await eventually(chain, timeout=30)
        publish, apply, poll, sample, evaluate, alert, deliver = linked
        by_id = {s.span_id: s for s in spans.spans if s.trace_id == trace_id}
        assert publish.kind == trace_pb2.Span.SPAN_KIND_PRODUCER
        # each hop is a child of the one before it, across the three processes
        assert by_id[apply.parent] is publish
        assert by_id[sample.parent] is poll and by_id[poll.parent] is apply
        assert by_id[evaluate.parent] is sample
        assert by_id[alert.parent] is evaluate and by_id[deliver.parent] is alert
        ancestor = publish
        while ancestor.parent:
            ancestor = by_id[ancestor.parent]
        assert ancestor is root

        # the collector's reconciliation asks the registry through an instrumented client: one trace, two services
        def reconciled() -> tuple[Span, Span] | None:
            listing = "/cml.monitor.v1.WorkerRegistryService/ListWorkers"
            clients = {s.span_id: s for s in spans.spans if (s.service, s.name, s.kind) == (
                "collector", listing, trace_pb2.Span.SPAN_KIND_CLIENT)}
            served = [s for s in spans.spans if (s.service, s.name, s.kind) == (
                "registry", listing, trace_pb2.Span.SPAN_KIND_SERVER) and s.parent in clients]
            return (clients[served[0].parent], served[0]) if served else None

        client, server = await eventually(reconciled, timeout=30)
        assert client.trace_id == server.trace_id
        # once the span of the call made after the health calls is exported (the registry exports spans in the
        # order they end), none of health is there
        get = "/cml.monitor.v1.WorkerRegistryService/GetWorker"
        await eventually(lambda: [s for s in spans.spans if (s.service, s.name) == ("registry", get)], timeout=30)
        assert not [s for s in spans.spans if s.name.startswith("/grpc.health.v1.Health/")]

    await asyncio.to_thread(registry.stop)
    lines = [json.loads(line) for line in registry.log().splitlines() if line.startswith("{")]
    published = [e for e in lines if e.get("msg") == "event published" and e.get("trace_id") == trace_id]
    assert published and published[0]["span_id"] == publish.span_id
