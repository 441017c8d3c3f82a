"""A lease in KV cml_alerts ("_leases.<name>"): which replica does a periodic job that one replica suffices for.

Taken and renewed by compare-and-set on the key's revision; a holder that stops renewing (crashed, stopped,
cut off) loses it when it expires, and the next replica that asks takes it over."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Protocol

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from cmlmon_core.topology import ALERTS_BUCKET
from notifier.adapters.state_kv import LEASE_PREFIX

log = logging.getLogger(__name__)


class Lease(Protocol):
    async def hold(self) -> bool:
        """True when this replica holds the lease for the next ttl seconds (taken or renewed just now)."""
        ...

    async def release(self) -> None:
        """Give the lease up if held (a replica stopping), so a successor need not wait for it to expire."""
        ...


class KvLease:
    def __init__(self, js: JetStreamContext, name: str, owner: str, ttl: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._js = js
        self._kv: KeyValue | None = None
        self.key = LEASE_PREFIX + name
        self.owner = owner
        self._ttl = ttl
        self._clock = clock

    async def hold(self) -> bool:
        now = self._clock()
        value = json.dumps({"owner": self.owner, "until": now + self._ttl}).encode()
        try:
            if self._kv is None:
                self._kv = await self._js.key_value(ALERTS_BUCKET)
            try:
                entry = await self._kv.get(self.key)
            except KeyNotFoundError:
                await self._kv.create(self.key, value)
                return True
            if entry.operation not in (KV_DEL, KV_PURGE) and entry.value:
                held = json.loads(entry.value)
                if held.get("owner") != self.owner and float(held.get("until", 0)) > now:
                    return False
            await self._kv.update(self.key, value, last=entry.revision)
            return True
        except KeyWrongLastSequenceError:
            return False  # another replica took or renewed it first
        except (NatsError, ValueError) as exc:  # nats-py's create raises its own error when the key exists
            log.debug("lease not taken", extra={"lease": self.key, "error": repr(exc)})
            return False

    async def release(self) -> None:
        if self._kv is None:
            return
        try:
            entry = await self._kv.get(self.key)
            if entry.value and json.loads(entry.value).get("owner") == self.owner:
                await self._kv.delete(self.key, last=entry.revision)
        except (NatsError, ValueError) as exc:  # not held, taken meanwhile, or NATS gone: it expires anyway
            log.debug("lease not released", extra={"lease": self.key, "error": repr(exc)})
