"""GetWorkerMetrics: one worker's samples in a window, raw or downsampled, in pages whose token is the stream
sequence the next page starts at (signed and bound to the query like ListWorkers tokens)."""

from __future__ import annotations

import time
from datetime import UTC

from cml.monitor.v1 import registry_service_pb2 as rs
from registry.adapters.history import ReadFrom
from registry.domain import validation
from registry.domain.history import Downsampler, Window
from registry.errors import InvalidArgument, Unavailable
from registry.service.handlers import Registry

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000
_NS = 1_000_000_000
_LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a Timestamp may hold


def window_of(req: rs.GetWorkerMetricsRequest, now_ns: int) -> Window:
    if not req.HasField("start_time"):
        raise InvalidArgument("start_time", "required")
    for name in ("start_time", "end_time"):
        stamp = getattr(req, name)
        if not (0 <= stamp.seconds <= _LAST_SECOND and 0 <= stamp.nanos < _NS):
            raise InvalidArgument(name, "a time between 1970 and 9999 expected")
    start = req.start_time.ToNanoseconds()
    end = req.end_time.ToNanoseconds() if req.HasField("end_time") else now_ns
    if end <= start:
        raise InvalidArgument("end_time", "must be after start_time")
    step = req.step.ToNanoseconds() if req.HasField("step") else 0
    if req.HasField("step") and step < _NS:
        raise InvalidArgument("step", "at least one second")
    return Window(start, end, step)


def page_size(req: rs.GetWorkerMetricsRequest) -> int:
    if not 0 <= req.page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"0 to {MAX_PAGE_SIZE} expected, got {req.page_size}")
    return req.page_size or DEFAULT_PAGE_SIZE


async def get_worker_metrics(registry: Registry, req: rs.GetWorkerMetricsRequest) -> rs.GetWorkerMetricsResponse:
    validation.worker_id(req.worker_id, "worker_id")
    window = window_of(req, time.time_ns())
    limit = page_size(req)
    tokens, history = registry.page_tokens, registry.history
    if tokens is None or history is None:
        raise Unavailable("registry is starting")
    if req.page_token:
        start = ReadFrom(sequence=_sequence(tokens.read(req.page_token, req)))
    else:  # samples are stored after they are observed: nothing of the window was stored before its start
        start = ReadFrom(time=req.start_time.ToDatetime(tzinfo=UTC))
    worker = (await registry.get_stored(req.worker_id)).worker
    out = rs.GetWorkerMetricsResponse()
    buckets = Downsampler(window, limit) if window.step_ns else None
    samples = history.read(worker.region, worker.id, start)
    try:
        async for stored in samples:
            if window.passed(stored.stored_ns):
                break
            observed = stored.sample.observe_time.ToNanoseconds()
            if not window.holds(observed):
                continue
            full = not buckets.offer(stored.sample, observed) if buckets is not None else len(out.samples) == limit
            if full:
                out.next_page_token = tokens.issue(str(stored.sequence), req)
                break
            if buckets is None:
                out.samples.append(stored.sample)
    finally:
        await samples.aclose()
    if buckets is not None:
        out.buckets.extend(buckets.buckets())
    return out


def _sequence(text: str) -> int:
    if not text.isdigit():
        raise InvalidArgument("page_token", "not a token this registry issued")
    return int(text)
