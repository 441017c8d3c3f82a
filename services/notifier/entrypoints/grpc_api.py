"""gRPC cml.monitor.v1.AlertService: active alerts and silences. Served by cmlmon_core.grpc_server."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import grpc

from cml.monitor.v1 import alert_pb2, alert_pb2_grpc
from cmlmon_core.auth import Role, current_principal
from cmlmon_core.grpc_server import ServedService
from notifier.adapters.codec import alert_to_proto, set_ts, ts_seconds, ts_valid
from notifier.adapters.state_kv import AlertStore
from notifier.domain.model import Phase
from notifier.domain.silences import Silence, validate_silence
from notifier.errors import SilenceNotFound, StoreUnavailable

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE_NAME = alert_pb2.DESCRIPTOR.services_by_name["AlertService"].full_name
# The role each method needs (viewer < operator < admin).
ROLES: dict[str, Role] = {
    "ListAlerts": Role.VIEWER, "ListSilences": Role.VIEWER,
    "CreateSilence": Role.OPERATOR, "DeleteSilence": Role.OPERATOR,
}

log = logging.getLogger(__name__)


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
                          comment=request.comment, created_by=request.created_by or current_principal(),
                          create_time=now)
        try:
            await self._store.put_silence(silence)
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        log.info("silence created by a call", extra={"principal": current_principal(), "method": "CreateSilence",
                                                      "silence_id": silence.silence_id,
                                                      "worker_id": silence.worker_id, "rule": silence.rule})
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
        log.info("silence deleted by a call", extra={"principal": current_principal(), "method": "DeleteSilence",
                                                      "silence_id": request.id})
        self._wake.set()
        return alert_pb2.DeleteSilenceResponse()


def served(servicer: AlertServicer) -> ServedService:
    """The AlertService as the shared gRPC server builder serves it."""
    return ServedService(SERVICE_NAME, lambda server: alert_pb2_grpc.add_AlertServiceServicer_to_server(  # type: ignore[no-untyped-call]
        servicer, server), ROLES)
