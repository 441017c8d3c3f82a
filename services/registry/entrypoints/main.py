"""`python -m registry`: gRPC server (with reflection and health), the worker view, the samples consumer and
the outbox sweep, in one TaskGroup; SIGINT/SIGTERM end the watch streams, stop gRPC with a grace period,
finish in-flight samples and drain NATS."""

from __future__ import annotations

import asyncio
import gc
import logging

from prometheus_client import REGISTRY

from cmlmon_core import nats_conn, telemetry
from cmlmon_core.grpc_server import GrpcSecurity, grpc_security, grpc_security_or_exit, start_grpc_server
from cmlmon_core.lifecycle import run_until_stopped, stop_on_signals, stopped_within
from cmlmon_core.logs import configure_logging
from cmlmon_core.settings import load_settings
from cmlmon_core.topology import TopologyOptions, ensure_topology
from cmlmon_core.tracing import tracing_or_exit
from registry.adapters.history import JetStreamMetricHistory
from registry.bootstrap import bootstrap
from registry.entrypoints.fleet_metrics import FleetCollector
from registry.entrypoints.grpc_api import served
from registry.entrypoints.metrics_consumer import consume_samples
from registry.service.handlers import Registry, SavedHook
from registry.settings import RegistrySettings

log = logging.getLogger("registry")


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
              on_saved: SavedHook | None = None, security: GrpcSecurity | None = None) -> None:
    """Serve until stop is set; ready is set once gRPC serves (until then there is nothing in flight).
    on_saved is a test hook (see Registry): production passes none.

    gRPC is served only once the store answers and the worker view is loaded: until then (MongoDB unreachable,
    retried with back-off) the port is closed, so clients get UNAVAILABLE and the health check fails."""
    security = security or grpc_security(settings)
    async with nats_conn.connect(settings, "registry") as nc:
        js = nc.jetstream()
        await ensure_topology(js, TopologyOptions.from_settings(settings))
        # waits while MongoDB is unreachable; run_until_stopped cancels it
        history = await JetStreamMetricHistory.open(nc, retention_seconds=settings.metrics_stream_max_age_seconds)
        wiring = await bootstrap(settings, js, history=history, on_saved=on_saved)
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
                # The loaded fleet (a few objects per worker) lives as long as the process: leave it out of
                # every later collection, which would otherwise walk it all (100-300 ms with 10,000-100,000
                # workers) and stall every call in flight meanwhile: that was ListWorkers' p99.
                gc.freeze()
                server = await start_grpc_server([served(registry)], settings.grpc_host, settings.grpc_port,
                                                 security, health_port=settings.grpc_health_port)
                if ready is not None:
                    ready.set()
                log.info("registry serving", extra={"grpc_port": server.port, "metrics_port": settings.metrics_port,
                                                    "workers": len(registry.view)})
                consumer = tasks.create_task(consume_samples(js, registry, stop, settings.registry_metrics_batch))
                tasks.create_task(sweep_outbox(registry, stop, settings.registry_outbox_sweep_seconds))
                await stop.wait()
                log.info("registry stopping")
                registry.view.close()  # ends WatchWorkers streams cleanly
                await server.stop(settings.shutdown_grace_seconds)
                await consumer
                follow.cancel()
        finally:
            if fleet is not None:
                REGISTRY.unregister(fleet)
            await wiring.aclose()
    log.info("registry stopped")


async def amain(on_saved: SavedHook | None = None) -> None:
    settings = load_settings(RegistrySettings)
    configure_logging("registry", settings.log_level, settings.log_format)
    security = grpc_security_or_exit(settings)
    stop = stop_on_signals()
    telemetry.serve_metrics(settings.metrics_port, settings.metrics_host)
    with tracing_or_exit("registry"):
        await run_until_stopped(lambda ready: run(settings, stop, ready, on_saved=on_saved, security=security),
                                stop, stop_timeout=settings.shutdown_grace_seconds + 10)


def main() -> None:
    asyncio.run(amain())
