"""Alert state and silences in the JetStream KV bucket cml_alerts.

Keys: "<worker_id>.<rule>" for alert state (JSON of AlertState), "_silences.<id>" for silences, "_leases.<name>"
for the leases of adapters/lease.py (not cached here). Every replica
keeps a cache fed by a watch on the whole bucket, so evaluation reads locally; writes are compare-and-set on
the revision the cache holds, and a conflict refreshes that key from the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from cmlmon_core.topology import ALERTS_BUCKET
from notifier.domain.model import AlertState
from notifier.domain.silences import Silence
from notifier.errors import SilenceNotFound, StateConflict, StoreUnavailable

log = logging.getLogger(__name__)
SILENCE_PREFIX = "_silences."
LEASE_PREFIX = "_leases."
_NONE: Mapping[str, AlertState] = {}


class AlertStore(Protocol):
    def cached(self, key: str) -> tuple[AlertState | None, int]: ...
    def worker_states(self, worker_id: str) -> Mapping[str, AlertState]: ...
    async def refresh(self, key: str) -> tuple[AlertState | None, int]: ...
    async def put(self, state: AlertState, revision: int) -> int: ...
    def states(self) -> list[AlertState]: ...
    def silences(self) -> list[Silence]: ...
    async def put_silence(self, silence: Silence) -> None: ...
    async def delete_silence(self, silence_id: str) -> Silence: ...


class KvAlertStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._states: dict[str, tuple[AlertState, int]] = {}
        self._deleted: dict[str, int] = {}  # revision of a delete marker: the next write must name it
        self._by_worker: dict[str, dict[str, AlertState]] = {}  # the states above, by worker id and rule
        self._silences: dict[str, tuple[Silence, int]] = {}
        self._watcher: Any = None
        self.changed = asyncio.Event()  # set whenever a silence changes; the sweeper waits on it

    @classmethod
    async def open(cls, js: JetStreamContext) -> KvAlertStore:
        return cls(await js.key_value(ALERTS_BUCKET))

    async def start(self) -> None:
        """Start watching and return once the cache holds every existing key."""
        self._watcher = await self._kv.watchall()
        while True:
            entry = await self._watcher.updates(timeout=30)
            if entry is None:
                return
            self._apply(entry.key, entry.value, entry.revision, entry.operation)

    async def run(self) -> None:
        """Keep the cache current until cancelled."""
        if self._watcher is None:
            await self.start()
        async for entry in self._watcher:
            if entry is not None:
                self._apply(entry.key, entry.value, entry.revision, entry.operation)

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()

    def _apply(self, key: str, value: bytes | None, revision: int, operation: str | None) -> None:
        if key.startswith(LEASE_PREFIX):
            return
        deleted = operation in (KV_DEL, KV_PURGE) or not value
        if key.startswith(SILENCE_PREFIX):
            sid = key.removeprefix(SILENCE_PREFIX)
            if deleted:
                self._silences.pop(sid, None)
            else:
                self._silences[sid] = (Silence.from_json(value or b"{}"), revision)
            self.changed.set()
            return
        current = self._states.get(key)
        if (current is not None and current[1] >= revision) or self._deleted.get(key, 0) >= revision:
            return
        if deleted:
            self._forget(key)
            self._deleted[key] = revision
            return
        self._deleted.pop(key, None)
        try:
            state = AlertState.from_json(value or b"{}")
        except (ValueError, TypeError) as exc:
            log.warning("unreadable alert state ignored", extra={"key": key, "error": repr(exc)})
            return
        self._states[key] = (state, revision)
        worker_id, _, rule = key.rpartition(".")  # "<worker_id>.<rule>": a rule name has no dot
        self._by_worker.setdefault(worker_id, {})[rule] = state

    def _forget(self, key: str) -> None:
        if self._states.pop(key, None) is None:
            return
        worker_id, _, rule = key.rpartition(".")
        rules = self._by_worker[worker_id]
        del rules[rule]
        if not rules:
            del self._by_worker[worker_id]

    def cached(self, key: str) -> tuple[AlertState | None, int]:
        """The state as this replica last saw it (kept current by the watch)."""
        cached = self._states.get(key)
        return cached if cached is not None else (None, self._deleted.get(key, 0))

    def worker_states(self, worker_id: str) -> Mapping[str, AlertState]:
        """The worker's alert states as this replica last saw them, by rule (empty for most workers: one
        lookup tells the evaluator a sample has nothing to move)."""
        return self._by_worker.get(worker_id, _NONE)

    async def refresh(self, key: str) -> tuple[AlertState | None, int]:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError as exc:
            self._forget(key)
            marker = getattr(exc, "entry", None)
            if marker is not None and marker.revision:
                self._deleted[key] = int(marker.revision)
            return self.cached(key)
        except NatsError as exc:
            raise StoreUnavailable(f"cannot read {key}: {exc!r}") from exc
        self._apply(key, entry.value, entry.revision or 0, entry.operation)
        return self.cached(key)

    async def put(self, state: AlertState, revision: int) -> int:
        key = state.key
        try:
            new_rev = int(await self._kv.update(key, state.to_json(), last=revision))
        except KeyWrongLastSequenceError as exc:
            raise StateConflict(key) from exc
        except NatsError as exc:
            raise StoreUnavailable(f"cannot write {key}: {exc!r}") from exc
        self._apply(key, state.to_json(), new_rev, None)
        return new_rev

    def states(self) -> list[AlertState]:
        return [s for s, _ in self._states.values()]

    def silences(self) -> list[Silence]:
        return [s for s, _ in self._silences.values()]

    async def put_silence(self, silence: Silence) -> None:
        try:
            rev = await self._kv.put(SILENCE_PREFIX + silence.silence_id, silence.to_json())
        except NatsError as exc:
            raise StoreUnavailable(f"cannot write silence: {exc!r}") from exc
        self._silences[silence.silence_id] = (silence, int(rev))
        self.changed.set()

    async def delete_silence(self, silence_id: str) -> Silence:
        cached = self._silences.get(silence_id)
        if cached is None:
            raise SilenceNotFound(silence_id)
        try:
            await self._kv.delete(SILENCE_PREFIX + silence_id)
        except NatsError as exc:
            raise StoreUnavailable(f"cannot delete silence: {exc!r}") from exc
        self._silences.pop(silence_id, None)
        self.changed.set()
        return cached[0]
