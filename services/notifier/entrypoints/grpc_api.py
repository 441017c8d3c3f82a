"""gRPC cml.monitor.v1.AlertService: active alerts and silences. Served with reflection and health."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from cml.monitor.v1 import alert_pb2, alert_pb2_grpc
from notifier.adapters.codec import alert_to_proto, set_ts, ts_seconds, ts_valid
from notifier.adapters.state_kv import AlertStore
from notifier.domain.model import Phase
from notifier.domain.silences import Silence, validate_silence
from notifier.errors import SilenceNotFound, StoreUnavailable

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE_NAME = alert_pb2.DESCRIPTOR.services_by_name["AlertService"].full_name


def silence_to_proto(s: Silence) -> alert_pb2.Silence:
    msg = alert_pb2.Silence(id=s.silence_id, worker_id=s.worker_id, rule=s.rule, comment=s.comment,
                            created_by=s.created_by)
    set_ts(msg.end_time, s.end_time)
    set_ts(msg.create_time, s.create_time)
    return msg


class AlertServicer(alert_pb2_grpc.AlertServiceServicer):
    def __init__(self, store: AlertStore, wake: asyncio.Event) -> None:
        self._store = store
        self._wake = wake  # the sweeper delivers alerts whose silence just ended

    async def ListAlerts(self, request: alert_pb2.ListAlertsRequest, context: Context
                         ) -> alert_pb2.ListAlertsResponse:
        out = []
        for s in sorted(self._store.states(), key=lambda s: s.key):
            if (request.worker_id and s.worker_id != request.worker_id) or (request.rule and s.rule != request.rule):
                continue
            if s.phase is Phase.FIRING:
                out.append(alert_to_proto(s, firing=True))
            elif request.show_resolved and s.end_time is not None:
                out.append(alert_to_proto(s, firing=False))
        return alert_pb2.ListAlertsResponse(alerts=out)

    async def CreateSilence(self, request: alert_pb2.CreateSilenceRequest, context: Context
                            ) -> alert_pb2.CreateSilenceResponse:
        now = time.time()
        end = ts_seconds(request.end_time) or 0.0
        problem = validate_silence(request.worker_id, request.rule, end, now)
        if not ts_valid(request.end_time):
            problem = "end_time is not a valid timestamp (years 1 to 9999)"
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        silence = Silence(silence_id=uuid.uuid4().hex, worker_id=request.worker_id, rule=request.rule, end_time=end,
                          comment=request.comment, created_by=request.created_by, create_time=now)
        try:
            await self._store.put_silence(silence)
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return alert_pb2.CreateSilenceResponse(silence=silence_to_proto(silence))

    async def ListSilences(self, request: alert_pb2.ListSilencesRequest, context: Context
                           ) -> alert_pb2.ListSilencesResponse:
        now = time.time()
        active = sorted((s for s in self._store.silences() if s.active(now)), key=lambda s: s.create_time)
        return alert_pb2.ListSilencesResponse(silences=[silence_to_proto(s) for s in active])

    async def DeleteSilence(self, request: alert_pb2.DeleteSilenceRequest, context: Context
                            ) -> alert_pb2.DeleteSilenceResponse:
        try:
            await self._store.delete_silence(request.id)
        except SilenceNotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no silence {request.id!r}")
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        self._wake.set()
        return alert_pb2.DeleteSilenceResponse()


async def start_grpc(servicer: AlertServicer, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    # No SO_REUSEPORT: a second server on a taken port must fail to start, not silently share it.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    alert_pb2_grpc.add_AlertServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound
