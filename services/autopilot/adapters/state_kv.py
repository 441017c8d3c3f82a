"""Per-worker autopilot state in the JetStream KV bucket cml_autopilot (key = worker id), changed only by
compare-and-set on the entry's revision, so two replicas never both act on the same state. The JSON layout of
the value lives here and only here."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Protocol

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from autopilot.domain.autostop import PilotState
from autopilot.domain.idle import IdleState
from autopilot.domain.remediation import RemediationState
from autopilot.errors import AutopilotError
from cmlmon_core.topology import AUTOPILOT_BUCKET

_TIMES = ("warned_at", "stop_requested_at", "stop_claimed_at", "stop_settled", "stopped_since", "accounted_until",
          "schedule_handled")
_FLAGS = ("idle_notified", "dry_run_notified", "skipped_notified", "schedule_waiting")


class StateConflict(AutopilotError):
    """Another replica changed the state since it was read: read again and decide again."""


class StateStore(Protocol):
    async def get(self, worker_id: str) -> tuple[PilotState, int]: ...
    async def put(self, worker_id: str, state: PilotState, revision: int) -> None: ...


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def to_json(state: PilotState) -> bytes:
    doc: dict[str, Any] = {"idle_since": _time(state.idle.idle_since), "last_seen": _time(state.idle.last_seen)}
    doc.update({name: _time(getattr(state, name)) for name in _TIMES})
    doc.update({name: getattr(state, name) for name in _FLAGS})
    doc["controller_alerts"] = sorted(state.controller_alerts)
    doc["remediation"] = _remediation_doc(state.remediation)
    return json.dumps(doc, separators=(",", ":")).encode()


def from_json(data: bytes) -> PilotState:
    doc = json.loads(data)
    return PilotState(
        idle=IdleState(idle_since=_parse(doc.get("idle_since")), last_seen=_parse(doc.get("last_seen"))),
        idle_notified=bool(doc.get("idle_notified")), dry_run_notified=bool(doc.get("dry_run_notified")),
        skipped_notified=bool(doc.get("skipped_notified")), warned_at=_parse(doc.get("warned_at")),
        stop_requested_at=_parse(doc.get("stop_requested_at")), stop_claimed_at=_parse(doc.get("stop_claimed_at")),
        stop_settled=_parse(doc.get("stop_settled")), stopped_since=_parse(doc.get("stopped_since")),
        accounted_until=_parse(doc.get("accounted_until")), schedule_handled=_parse(doc.get("schedule_handled")),
        schedule_waiting=bool(doc.get("schedule_waiting")),
        controller_alerts=frozenset(str(r) for r in doc.get("controller_alerts") or ()),
        remediation=_remediation(doc.get("remediation") or {}))


def _remediation_doc(r: RemediationState) -> dict[str, Any]:
    return {"last_seen": _time(r.last_seen), "impaired_since": _time(r.impaired_since), "announced": r.announced,
            "remedy": r.remedy, "acted_at": _time(r.acted_at), "start_pending": r.start_pending,
            "escalated": r.escalated}


def _remediation(doc: dict[str, Any]) -> RemediationState:
    remedy = doc.get("remedy")
    return RemediationState(
        last_seen=_parse(doc.get("last_seen")), impaired_since=_parse(doc.get("impaired_since")),
        announced=bool(doc.get("announced")), remedy=remedy if remedy in ("reboot", "stop_start") else None,
        acted_at=_parse(doc.get("acted_at")), start_pending=bool(doc.get("start_pending")),
        escalated=bool(doc.get("escalated")))


class KvStateStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> KvStateStore:
        return cls(await js.key_value(AUTOPILOT_BUCKET))

    async def get(self, worker_id: str) -> tuple[PilotState, int]:
        """The state and its revision; a worker never seen has the empty state and revision 0."""
        try:
            entry = await self._kv.get(worker_id)
        except KeyNotFoundError:
            return PilotState(), 0
        except NatsError as exc:
            raise AutopilotError(f"reading state of {worker_id}: {exc!r}") from exc
        if entry.value is None:
            return PilotState(), int(entry.revision or 0)
        return from_json(entry.value), int(entry.revision or 0)

    async def put(self, worker_id: str, state: PilotState, revision: int) -> None:
        """Write state if the entry is still at revision (0: absent); StateConflict otherwise."""
        try:
            if revision == 0:
                await self._kv.create(worker_id, to_json(state))
            else:
                await self._kv.update(worker_id, to_json(state), last=revision)
        except KeyWrongLastSequenceError as exc:
            raise StateConflict(worker_id) from exc
        except NatsError as exc:
            if "wrong last sequence" in str(exc):  # create() of an existing key
                raise StateConflict(worker_id) from exc
            raise AutopilotError(f"writing state of {worker_id}: {exc!r}") from exc
