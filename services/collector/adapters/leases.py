"""Region leases in the KV bucket `collector-leases`: one key per region (`region.<region>`, value: the holder's
collector id) and one per live replica (`member.<id>`). The bucket's TTL is the lease time: a key not written
again within it disappears on the server, so a killed replica's leases free themselves without trusting any
replica's clock. Claims are compare-and-set (create a missing key; renew with the revision last written), so a
region has at most one holder."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from cmlmon_core import subjects
from cmlmon_core.topology import POLLS_STREAM

log = logging.getLogger(__name__)

BUCKET = "collector-leases"
_REGION = "region."
_MEMBER = "member."
_STREAM_NAME_IN_USE = 10058
_TICK_PREFIX = "cml.polls.tick."


@dataclass(slots=True)
class Held:
    revision: int
    renewed_at: float  # monotonic


def _member_key(collector_id: str) -> str:
    return _MEMBER + hashlib.sha256(collector_id.encode()).hexdigest()[:16]  # ids like host:pid are no KV keys


class RegionLeases:
    def __init__(self, nc: Client, js: JetStreamContext, collector_id: str, lease_seconds: float,
                 replicas: int = 1, timeout: float = 5.0) -> None:
        self._nc = nc
        self._js = js
        self.collector_id = collector_id
        self.lease_seconds = lease_seconds
        self._replicas = replicas
        self._timeout = timeout
        self._kv: KeyValue | None = None
        self.held: dict[str, Held] = {}

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            config = KeyValueConfig(bucket=BUCKET, description="collector: which replica polls which region",
                                    history=1, ttl=self.lease_seconds, storage=StorageType.FILE,
                                    replicas=self._replicas)
            try:
                self._kv = await self._js.create_key_value(config)
            except BadRequestError as exc:
                if exc.err_code != _STREAM_NAME_IN_USE:
                    raise
                self._kv = await self._js.key_value(BUCKET)
                info = await self._js.stream_info(f"KV_{BUCKET}")
                if info.config.max_age != self.lease_seconds:  # the lease time follows the setting
                    info.config.max_age = self.lease_seconds
                    await self._js.update_stream(info.config)
                    log.info("lease time of the bucket changed", extra={"bucket": BUCKET,
                                                                         "seconds": self.lease_seconds})
        return self._kv

    async def announce(self) -> None:
        """Say this replica is alive (the key lapses a lease time after the last announcement)."""
        kv = await self._bucket()
        await kv.put(_member_key(self.collector_id), self.collector_id.encode())

    async def snapshot(self) -> tuple[set[str], dict[str, str]]:
        """The live replicas (collector ids) and every held region's holder (region -> collector id)."""
        kv = await self._bucket()
        watcher = await kv.watchall(ignore_deletes=True)
        members: set[str] = set()
        holders: dict[str, str] = {}
        try:
            async for entry in watcher:
                if entry is None:  # the current values are all in
                    break
                value = (entry.value or b"").decode()
                if entry.key.startswith(_MEMBER):
                    members.add(value)
                elif entry.key.startswith(_REGION):
                    holders[entry.key.removeprefix(_REGION)] = value
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return members, holders

    async def claim(self, region: str) -> bool:
        kv = await self._bucket()
        try:
            revision = await kv.create(_REGION + region, self.collector_id.encode())
        except KeyWrongLastSequenceError:
            return False  # another replica was faster
        self.held[region] = Held(revision, time.monotonic())
        log.info("region lease taken", extra={"region": region, "collector_id": self.collector_id})
        return True

    async def renew(self) -> None:
        """Write every held lease again; a lease that was taken over (or not renewed within the lease time,
        so that it may have lapsed) is dropped from `held`."""
        kv = await self._bucket()
        now = time.monotonic()
        for region, held in list(self.held.items()):
            try:
                held.revision = await kv.update(_REGION + region, self.collector_id.encode(), last=held.revision)
                held.renewed_at = now
            except KeyWrongLastSequenceError:
                self._lost(region, "taken over")
            except (NatsError, TimeoutError) as exc:
                if now - held.renewed_at >= self.lease_seconds:
                    self._lost(region, repr(exc))

    def expire(self) -> None:
        """Drop leases not renewed within the lease time (NATS unreachable): another replica may hold them. The
        bucket is looked up (and created if it is gone) again next time."""
        self._kv = None
        now = time.monotonic()
        for region, held in list(self.held.items()):
            if now - held.renewed_at >= self.lease_seconds:
                self._lost(region, "not renewed in time")

    def _lost(self, region: str, why: str) -> None:
        del self.held[region]
        log.warning("region lease lost", extra={"region": region, "collector_id": self.collector_id, "why": why})

    async def release(self, region: str) -> None:
        held = self.held.pop(region, None)
        if held is None:
            return
        try:
            await (await self._bucket()).delete(_REGION + region, last=held.revision)
        except (NatsError, TimeoutError) as exc:  # it lapses on its own
            log.warning("releasing a region lease failed", extra={"region": region, "error": repr(exc)})
        log.info("region lease released", extra={"region": region, "collector_id": self.collector_id})

    async def leave(self) -> None:
        """Release every lease and the membership, so the others take over at once instead of after a lease
        time; best effort."""
        for region in list(self.held):
            await self.release(region)
        try:
            await (await self._bucket()).delete(_member_key(self.collector_id))
        except (NatsError, TimeoutError) as exc:
            log.debug("leaving failed", extra={"error": repr(exc)})

    async def regions(self) -> set[str]:
        """Regions with ticks: the region tokens of CML_POLLS' subjects under cml.polls.tick., paged as the
        server pages them."""
        found: set[str] = set()
        offset = 0
        while True:
            request = {"subjects_filter": subjects.POLL_TICKS_ALL, "offset": offset}
            msg = await self._nc.request(f"$JS.API.STREAM.INFO.{POLLS_STREAM}", json.dumps(request).encode(),
                                         timeout=self._timeout)
            reply = json.loads(msg.data)
            if "error" in reply:
                raise RuntimeError(f"reading the tick subjects failed: {reply['error']}")
            page: dict[str, int] = (reply.get("state") or {}).get("subjects") or {}
            found.update(s.removeprefix(_TICK_PREFIX).split(".", 1)[0] for s in page)
            offset += len(page)
            if not page or offset >= int(reply.get("total") or 0):
                return found
