"""`python -m registry`: gRPC server (with reflection and health), the worker view, the samples consumer and
the outbox sweep, in one TaskGroup; SIGINT/SIGTERM end the watch streams, stop gRPC with a grace period,
finish in-flight samples and drain NATS."""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import REGISTRY

from cml.monitor.v1 import registry_service_pb2
from cmlmon_core import nats_conn, telemetry
from cmlmon_core.lifecycle import run_until_stopped, stop_on_signals, stopped_within
from cmlmon_core.logs import configure_logging
from cmlmon_core.reflection import served_pool
from cmlmon_core.settings import load_settings
from cmlmon_core.topology import TopologyOptions, ensure_topology
from registry.bootstrap import bootstrap
from registry.entrypoints.fleet_metrics import FleetCollector
from registry.entrypoints.grpc_api import WorkerRegistryServicer, add_to_server
from registry.entrypoints.metrics_consumer import consume_samples
from registry.service.handlers import Registry, SavedHook
from registry.settings import RegistrySettings

log = logging.getLogger("registry")

SERVICE_NAME = registry_service_pb2.DESCRIPTOR.services_by_name["WorkerRegistryService"].full_name


def build_server(registry: Registry, host: str, port: int) -> tuple[grpc.aio.Server, int, HealthServicer]:
    # No SO_REUSEPORT: a second server on a taken port must fail to start, not silently share it.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    add_to_server(WorkerRegistryServicer(registry), server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server, pool=served_pool(names))  # the API only, no internals
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, bound, health_servicer


async def sweep_outbox(registry: Registry, stop: asyncio.Event, every: float) -> None:
    """Publish events whose writer died between saving and publishing: once at start, then periodically."""
    older_than = 0.0  # at start every unconfirmed event is an orphan of an earlier process... or of a peer
    while not stop.is_set():
        try:
            found = await registry.sweep_outbox(older_than_seconds=older_than)
            if found:
                log.info("unpublished events found and published", extra={"count": found})
        except Exception as exc:  # retried at the next sweep
            log.warning("outbox sweep failed", extra={"error": repr(exc)})
        older_than = every
        await stopped_within(stop, every)


async def run(settings: RegistrySettings, stop: asyncio.Event, ready: asyncio.Event | None = None, *,
              on_saved: SavedHook | None = None) -> None:
    """Serve until stop is set; ready is set once gRPC serves (until then there is nothing in flight).
    on_saved is a test hook (see Registry): production passes none."""
    async with nats_conn.connect(settings, "registry") as nc:
        js = nc.jetstream()
        await ensure_topology(js, TopologyOptions.from_settings(settings))
        wiring = await bootstrap(settings, js, on_saved=on_saved)
        registry = wiring.registry
        fleet: FleetCollector | None = FleetCollector(registry.view)
        try:
            REGISTRY.register(fleet)  # type: ignore[arg-type]
        except ValueError:  # a second registry in one process (tests): the first one exports the fleet
            fleet = None
        try:
            async with asyncio.TaskGroup() as tasks:
                follow = tasks.create_task(registry.view.follow(registry.repo))
                await registry.view.ready.wait()
                server, port, health_servicer = build_server(registry, settings.grpc_host, settings.grpc_port)
                await server.start()
                await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
                await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
                if ready is not None:
                    ready.set()
                log.info("registry serving", extra={"grpc_port": port, "metrics_port": settings.metrics_port,
                                                    "workers": len(registry.view)})
                consumer = tasks.create_task(consume_samples(js, registry, stop, settings.registry_metrics_batch))
                tasks.create_task(sweep_outbox(registry, stop, settings.registry_outbox_sweep_seconds))
                await stop.wait()
                log.info("registry stopping")
                await health_servicer.enter_graceful_shutdown()
                registry.view.close()  # ends WatchWorkers streams cleanly
                await server.stop(settings.shutdown_grace_seconds)
                await consumer
                follow.cancel()
        finally:
            if fleet is not None:
                REGISTRY.unregister(fleet)
            if wiring.aws is not None:
                await wiring.aws.__aexit__(None, None, None)
    log.info("registry stopped")


async def amain(on_saved: SavedHook | None = None) -> None:
    settings = load_settings(RegistrySettings)
    configure_logging("registry", settings.log_level, settings.log_format)
    stop = stop_on_signals()
    telemetry.serve_metrics(settings.metrics_port, settings.metrics_host)
    await run_until_stopped(lambda ready: run(settings, stop, ready, on_saved=on_saved), stop,
                            stop_timeout=settings.shutdown_grace_seconds + 10)


def main() -> None:
    asyncio.run(amain())
