"""`python -m autopilot`: watch metric samples, probe CML controllers, notice idle workers and (opt-in) stop them
through the registry."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx
from nats.aio.client import Client

from autopilot.adapters.state_kv import KvStateStore
from autopilot.bootstrap import bootstrap, prices
from autopilot.settings import AutopilotSettings
from cmlmon_core.aws import AwsClients
from cmlmon_core.grpc_client import GrpcTarget
from cmlmon_core.health import health_server
from cmlmon_core.lifecycle import run_until_stopped, stop_on_signals
from cmlmon_core.logs import configure_logging
from cmlmon_core.nats_conn import connect
from cmlmon_core.settings import load_settings
from cmlmon_core.telemetry import serve_metrics
from cmlmon_core.topology import TopologyOptions, ensure_topology

log = logging.getLogger("autopilot")


@dataclass
class Readiness:
    """What /readyz answers: connected to NATS right now, not stopping, and bound to the samples' durable."""

    stop: asyncio.Event
    nc: Client | None = None
    consuming: asyncio.Event | None = None

    def __call__(self) -> bool:
        return (self.nc is not None and self.nc.is_connected and not self.stop.is_set()
                and self.consuming is not None and self.consuming.is_set())


async def serve(settings: AutopilotSettings, stop: asyncio.Event, ready: asyncio.Event | None = None,
                readiness: Readiness | None = None) -> None:
    """Run until stop is set; the sample in hand is finished (or handed back), then NATS is drained."""
    async with connect(settings, "autopilot") as nc:
        js = nc.jetstream()
        await ensure_topology(js, TopologyOptions(metrics_max_age_seconds=settings.metrics_stream_max_age_seconds,
                                                  replicas=settings.nats_stream_replicas))
        store = await KvStateStore.open(js)
        async with (httpx.AsyncClient(verify=settings.cml_verify()) as http,
                    GrpcTarget.registry(settings).channel() as channel,
                    AwsClients(settings) as aws):
            samples = bootstrap(settings, js, store, channel=channel, http=http, aws=aws)
            await samples.consumer.subscribe()
            if readiness is not None:
                readiness.nc, readiness.consuming = nc, samples.consumer.consuming
            log.info("autopilot ready", extra={"mode": settings.autostop_mode,
                                                "registry": settings.registry_address})
            if ready is not None:
                ready.set()
            await samples.run(stop)
    log.info("autopilot stopped")


async def amain() -> None:
    settings = load_settings(AutopilotSettings)
    configure_logging("autopilot", settings.log_level, settings.log_format)
    try:
        prices(settings)  # a bad price file fails here, before anything starts
    except ValueError as exc:
        log.error("invalid configuration: %s", exc)
        raise SystemExit(2) from None
    serve_metrics(settings.metrics_port, settings.metrics_host)
    stop = stop_on_signals()
    readiness = Readiness(stop)
    # /healthz answers from the start, /readyz once connected and consuming (HEALTH_PORT; 0: neither).
    async with health_server(settings.metrics_host, settings.health_port, readiness):
        await run_until_stopped(lambda ready: serve(settings, stop, ready, readiness), stop,
                                stop_timeout=settings.shutdown_grace_seconds + 10)


def main() -> None:
    asyncio.run(amain())
