"""Licence-safe termination: a CML instance's Smart Licensing registration must be removed before the instance
is destroyed, or its seat stays taken in the licence account. Before TerminateWorker, a worker with a
controller (tag `cml:url`) whose licence is registered is deregistered through the controller's API. When that
cannot be done (no credentials, controller unreachable, deregistration refused while nodes run) the call is
refused, unless forced: then it goes ahead and a `licence_not_released` alert goes to CML_ALERTS."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from cml.monitor.v1 import alert_pb2, worker_pb2
from cmlmon_core import subjects
from cmlmon_core.cml import ControllerUnreachable, HttpCmlProbe
from cmlmon_core.messages import encode
from registry.errors import FailedPrecondition

log = logging.getLogger(__name__)

CML_URL_TAG = "cml:url"
RULE = "licence_not_released"


class LicenceReleaser(Protocol):
    async def release(self, worker: worker_pb2.Worker, *, force: bool) -> None: ...


class CmlLicenceReleaser:
    """`probe` is None when no CML credentials are configured: a worker with a controller then cannot be
    terminated without force."""

    def __init__(self, probe: HttpCmlProbe | None, js: JetStreamContext) -> None:
        self._probe = probe
        self._js = js

    async def release(self, worker: worker_pb2.Worker, *, force: bool) -> None:
        url = worker.tags.get(CML_URL_TAG, "")
        if not url:
            return
        reason = await self._deregister(url)
        if reason is None:
            return
        if not force:
            raise FailedPrecondition(f"CML licence of worker {worker.id} not released: {reason}; "
                                     "terminate with force to go ahead anyway")
        log.warning("terminating with the licence still registered", extra={"worker_id": worker.id,
                                                                             "reason": reason})
        await self._alert(worker, reason)

    async def _deregister(self, url: str) -> str | None:
        """None when the licence is released (or was not registered); else why not."""
        if self._probe is None:
            return "no CML credentials configured (CML_PASSWORD)"
        controller = await self._probe.probe(url)
        if not controller.reachable:
            return f"controller unreachable: {controller.error}"
        if not controller.licence_registered:
            return None
        try:
            await self._probe.deregister_licence(url)
        except (ControllerUnreachable, TimeoutError) as exc:
            return str(exc) or "deregistration timed out"
        return None

    async def _alert(self, worker: worker_pb2.Worker, reason: str) -> None:
        now = Timestamp()
        now.GetCurrentTime()
        transition = f"{worker.id}.{RULE}.{int(time.time() * 1000)}"
        alert = alert_pb2.Alert(
            id=f"{worker.id}.{RULE}", worker_id=worker.id, worker_name=worker.name, instance_id=worker.instance_id,
            region=worker.region, rule=RULE, severity=alert_pb2.ALERT_SEVERITY_CRITICAL,
            state=alert_pb2.ALERT_STATE_FIRING, start_time=now, transition_id=transition,
            summary=f"{worker.name or worker.id} terminated with its CML licence still registered: {reason}; "
                    "release the seat in the Smart Licensing account")
        data, headers = encode(alert, msg_id=transition)
        try:
            await self._js.publish(subjects.alert(worker.id, RULE), data, headers=headers, timeout=5)
        except NatsError as exc:  # the termination goes ahead; the log line above still says it
            log.error("licence_not_released alert not published", extra={"worker_id": worker.id,
                                                                         "error": repr(exc)})
