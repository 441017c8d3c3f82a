"""Metric history: each worker's samples kept by the registry in the KV bucket cml_metric_history, one key per
worker and six hours of observe time (`<worker_id>.<span start, unix seconds>`), whose value is a
MetricSampleChunk.

Why not read CML_METRICS itself: its blocks hold every worker's samples interleaved, so reading one worker's
day makes the server step over every other worker's samples of that day (about 90 ms of a 1.4 M-message walk
for one worker among 1,000, whatever the read API). Here a day is 4-5 keys, found through the stream's
per-subject index and sent in one batched direct get (`multi_last`, nats-server >= 2.11): no scan at all. Why six
hours, not one: a read loads each block that holds one of its keys, and a worker's hour keys of a day lie in 25
different blocks (a cold read of a day took 30-220 ms with hour keys, 7 ms with six-hour keys, under load); the
price is a larger value rewritten per sample (up to ~30 KB at one sample a minute).

Writes: the registry's sample consumer appends each sample to its chunk with a compare-and-set on the key's
revision (replicas of the registry may share a worker's samples); a redelivered sample (same observe_time) is
not appended twice. The chunks a replica wrote last are cached (bounded in bytes), so an append is one write."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

import nats.errors
import nats.js.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from cml.monitor.v1 import events_pb2
from cmlmon_core.topology import HISTORY_BUCKET
from registry.errors import Unavailable

log = logging.getLogger(__name__)

CHUNK_SECONDS = 6 * 3600  # span of observe time one key holds
_NS = 1_000_000_000
_CHUNK_NS = CHUNK_SECONDS * _NS
_KEYS_PER_GET = 64  # subjects named in one batched direct get
_APPEND_ATTEMPTS = 5
_STATUS = "Status"  # header of the server's status messages (204 end of batch, 404 none, ...)
_OPERATION = "KV-Operation"  # set on a key's delete or purge marker


class MetricHistory(Protocol):
    async def append(self, sample: events_pb2.MetricSample) -> None: ...

    def read(self, worker_id: str, start_ns: int, end_ns: int) -> AsyncGenerator[events_pb2.MetricSample, None]:
        ...


def chunk_start(observed_ns: int) -> int:
    """Unix seconds at which the chunk holding a sample observed at observed_ns starts."""
    return observed_ns // _CHUNK_NS * CHUNK_SECONDS


def chunk_key(worker_id: str, start: int) -> str:
    return f"{worker_id}.{start}"


def one_sample_chunk(sample: events_pb2.MetricSample) -> bytes:
    """What an append adds to a chunk's value: concatenated encodings merge into one chunk of both."""
    return events_pb2.MetricSampleChunk(samples=[sample]).SerializeToString()


def samples_in(value: bytes, start_ns: int, end_ns: int) -> list[events_pb2.MetricSample]:
    """A chunk's samples observed in [start_ns, end_ns), in observe_time order."""
    chunk = events_pb2.MetricSampleChunk.FromString(value)
    timed = [(observed_ns(s), s) for s in chunk.samples]
    return [s for t, s in sorted(timed, key=lambda p: p[0]) if start_ns <= t < end_ns]


def observed_ns(sample: events_pb2.MetricSample) -> int:
    """The sample's observe_time in unix ns: Timestamp.ToNanoseconds() without its checks (per sample read)."""
    stamp = sample.observe_time
    return stamp.seconds * _NS + stamp.nanos


@dataclass(frozen=True, slots=True)
class _Chunk:
    revision: int  # 0: the key does not exist
    value: bytes
    observed: frozenset[int]  # observe_time (ns) of the samples it holds


class JetStreamMetricHistory:
    """MetricHistory on the KV bucket cml_metric_history (retention: the bucket's TTL, that of CML_METRICS)."""

    def __init__(self, nc: Client, kv: KeyValue, *, retention_seconds: float, bucket: str = HISTORY_BUCKET,
                 cache_bytes: int = 64 << 20, timeout: float = 10.0) -> None:
        self._nc = nc
        self._kv = kv
        self._stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."
        self._retention_ns = int(retention_seconds * _NS)
        self._cache: OrderedDict[str, _Chunk] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0
        self._timeout = timeout

    @classmethod
    async def open(cls, nc: Client, *, retention_seconds: float, bucket: str = HISTORY_BUCKET
                   ) -> JetStreamMetricHistory:
        try:
            kv = await nc.jetstream().key_value(bucket)
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable(f"opening the metric history bucket {bucket}: {exc!r}") from exc
        return cls(nc, kv, retention_seconds=retention_seconds, bucket=bucket)

    # --- writing ----------------------------------------------------------------------------------------------

    async def append(self, sample: events_pb2.MetricSample) -> None:
        """Add the sample to its worker's chunk, once: compare-and-set, read again on a conflict."""
        observed = sample.observe_time.ToNanoseconds()
        key = chunk_key(sample.worker_id, chunk_start(observed))
        try:
            for _ in range(_APPEND_ATTEMPTS):
                chunk = self._cached(key) or await self._load(key)
                if observed in chunk.observed:
                    return  # a redelivery
                value = chunk.value + one_sample_chunk(sample)
                try:
                    if chunk.revision:
                        revision = await self._kv.update(key, value, last=chunk.revision)
                    else:
                        revision = await self._kv.create(key, value)
                except nats.js.errors.KeyWrongLastSequenceError:  # another replica wrote it: read it again
                    self._forget(key)
                    continue
                self._remember(key, _Chunk(revision, value, chunk.observed | {observed}))
                return
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            self._forget(key)
            raise Unavailable(f"appending to the history of {sample.worker_id}: {exc!r}") from exc
        raise Unavailable(f"appending to the history of {sample.worker_id}: {key} kept changing under us")

    def _cached(self, key: str) -> _Chunk | None:
        chunk = self._cache.get(key)
        if chunk is not None:
            self._cache.move_to_end(key)
        return chunk

    def _remember(self, key: str, chunk: _Chunk) -> None:
        self._forget(key)
        self._cache[key] = chunk
        self._cached_bytes += len(chunk.value)
        while self._cached_bytes > self._cache_bytes:
            self._forget(next(iter(self._cache)))  # the least recently used

    def _forget(self, key: str) -> None:
        chunk = self._cache.pop(key, None)
        if chunk is not None:
            self._cached_bytes -= len(chunk.value)

    async def _load(self, key: str) -> _Chunk:
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # none yet, or deleted: create() then
            return _Chunk(0, b"", frozenset())
        value = entry.value or b""
        try:
            chunk = events_pb2.MetricSampleChunk.FromString(value)
        except DecodeError:  # not ours to repair: replaced by a chunk of the samples from now on
            log.warning("undecodable history chunk replaced", extra={"key": key})
            return _Chunk(entry.revision or 0, b"", frozenset())
        return _Chunk(entry.revision or 0, value, frozenset(s.observe_time.ToNanoseconds() for s in chunk.samples))

    # --- reading ----------------------------------------------------------------------------------------------

    async def read(self, worker_id: str, start_ns: int, end_ns: int
                   ) -> AsyncGenerator[events_pb2.MetricSample, None]:
        """The worker's samples observed in [start_ns, end_ns), in observe_time order; the caller may stop early.
        Only the chunks the window overlaps (and the bucket can still hold) are asked for."""
        first = max(start_ns, time.time_ns() - self._retention_ns - _CHUNK_NS)
        starts = list(range(chunk_start(first), chunk_start(end_ns - 1) + 1, CHUNK_SECONDS))
        for i in range(0, len(starts), _KEYS_PER_GET):
            values = await self._last_values(worker_id, starts[i:i + _KEYS_PER_GET])
            for start in sorted(values):
                try:
                    samples = samples_in(values[start], start_ns, end_ns)
                except DecodeError:
                    log.warning("undecodable history chunk skipped", extra={"key": chunk_key(worker_id, start)})
                    continue
                for sample in samples:
                    yield sample

    async def _last_values(self, worker_id: str, starts: list[int]) -> dict[int, bytes]:
        """The current values of the worker's chunks that start at `starts` (those that exist), by start: one
        batched direct get naming their subjects ({"multi_last": [...]}, answered from the per-subject index)."""
        subjects = [self._prefix + chunk_key(worker_id, start) for start in starts]
        msgs = await self._direct_get({"multi_last": subjects}, worker_id)
        out: dict[int, bytes] = {}
        for msg in msgs:
            headers = msg.headers or {}
            if _OPERATION in headers:  # deleted or purged
                continue
            out[int(headers["Nats-Subject"].rsplit(".", 1)[1])] = msg.data
        return out

    async def _direct_get(self, request: dict[str, object], worker_id: str) -> list[Msg]:
        got: list[Msg] = []
        status: list[dict[str, str]] = []
        done = asyncio.Event()

        async def on_msg(msg: Msg) -> None:
            if msg.headers and _STATUS in msg.headers:
                status.append(msg.headers)
                done.set()
            else:
                got.append(msg)

        try:
            sub = await self._nc.subscribe(inbox := self._nc.new_inbox(), cb=on_msg)
            try:
                await self._nc.publish(f"$JS.API.DIRECT.GET.{self._stream}", json.dumps(request).encode(),
                                       reply=inbox)
                await asyncio.wait_for(done.wait(), self._timeout)
            finally:
                await sub.unsubscribe()
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable(f"reading the history of {worker_id}: {exc!r}") from exc
        code = status[0][_STATUS]
        if code in ("204", "404"):  # end of batch; none of those keys exists
            return got
        raise Unavailable(f"reading the history of {worker_id}: direct get answered {code} "
                          f"{status[0].get('Description', '')}".rstrip())
