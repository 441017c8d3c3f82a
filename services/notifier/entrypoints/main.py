"""`python -m notifier`: evaluate samples and lifecycle events, publish alert transitions, deliver them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

from cmlmon_core.grpc_server import GrpcSecurity, grpc_security, grpc_security_or_exit, start_grpc_server
from cmlmon_core.lifecycle import run_until_stopped, stop_on_signals
from cmlmon_core.logs import configure_logging, redact_url
from cmlmon_core.nats_conn import connect
from cmlmon_core.settings import load_settings
from cmlmon_core.telemetry import serve_metrics
from cmlmon_core.topology import TopologyOptions, ensure_topology
from cmlmon_core.tracing import tracing_or_exit
from notifier.adapters.sinks import http_session
from notifier.adapters.state_kv import KvAlertStore
from notifier.bootstrap import bootstrap
from notifier.entrypoints.grpc_api import served
from notifier.errors import SinkConfigError
from notifier.settings import NotifierSettings
from notifier.sink_config import sink_specs

log = logging.getLogger("notifier")


def tune_gc() -> None:
    """Never scan again what start-up loaded (modules, settings). A full collection walked all of it (protobuf,
    grpc, OpenTelemetry, aiohttp): 43-56 ms with the event loop stopped, and a webhook held that long. Young
    collections stay as they are (~0.1-0.2 ms each): a higher threshold would make each one longer."""
    gc.freeze()


async def serve(settings: NotifierSettings, stop: asyncio.Event, ready: asyncio.Event | None = None,
                security: GrpcSecurity | None = None) -> None:
    """Run until stop is set; then finish in-flight work, stop gRPC with a grace period and drain NATS."""
    security = security or grpc_security(settings)
    async with connect(settings, "notifier") as nc:
        js = nc.jetstream()
        await ensure_topology(js, TopologyOptions.from_settings(settings))
        store = await KvAlertStore.open(js)
        await store.start()
        watch = asyncio.create_task(store.run())
        async with http_session() as http:
            app = bootstrap(settings, js, store, http, wake=store.changed)
            prefix = settings.notifier_consumer_prefix
            for name, sink in app.sinks.items():  # sinks first: they must exist before any transition
                await sink.subscribe(js, f"{prefix}-sink-{name}")
            await app.directory.start(js)
            await app.worker_events.subscribe(js, f"{prefix}-workers")
            await app.samples.subscribe(js, prefix, settings.notifier_replay_seconds)
            server = await start_grpc_server([served(app.servicer)], settings.grpc_host, settings.grpc_port,
                                             security, health_port=settings.grpc_health_port)
            log.info("notifier ready", extra={"grpc_port": server.port, "sinks": sorted(app.sinks),
                                               "webhooks": [redact_url(u) for u in settings.webhook_urls]})
            if ready is not None:
                ready.set()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(app.worker_events.run(stop))
                    tg.create_task(app.samples.run(stop))
                    tg.create_task(app.sweeper.run(stop))
                    for resender in app.resenders:
                        tg.create_task(resender.run(stop))
                    for sink in app.sinks.values():
                        tg.create_task(sink.run(stop, grace=settings.shutdown_grace_seconds))
            finally:
                await server.stop(settings.shutdown_grace_seconds)
                await app.directory.stop()
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
                await store.stop()
    log.info("notifier stopped")


async def amain() -> None:
    settings = load_settings(NotifierSettings)
    configure_logging("notifier", settings.log_level, settings.log_format)
    try:
        sink_specs(settings)  # bad sink configuration fails here, before anything starts
    except SinkConfigError as exc:
        log.error("invalid sink configuration: %s", exc)
        raise SystemExit(2) from None
    security = grpc_security_or_exit(settings)
    serve_metrics(settings.metrics_port, settings.metrics_host)
    stop = stop_on_signals()
    tune_gc()  # here, not in serve: tests run serve in their own process
    with tracing_or_exit("notifier"):
        await run_until_stopped(lambda ready: serve(settings, stop, ready, security), stop,
                                stop_timeout=settings.shutdown_grace_seconds + 10)


def main() -> None:
    asyncio.run(amain())
