"""GetWorkerMetrics: one worker's samples in a window, raw or downsampled, in pages whose token is the observe time
the next page starts at (signed and bound to the query like ListWorkers tokens)."""

from __future__ import annotations

import time

from cml.monitor.v1 import registry_service_pb2 as rs
from registry.adapters.history import observed_ns
from registry.domain import validation
from registry.domain.history import Downsampler, Window
from registry.errors import InvalidArgument, Unavailable
from registry.service.handlers import Registry

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000
_NS = 1_000_000_000
_LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a Timestamp may hold
_TOKEN_PREFIX = "t"  # a token holds the observe time the next page starts at (older tokens held a sequence)


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
    start = max(_resume_at(tokens.read(req.page_token, req)), window.start_ns) if req.page_token else window.start_ns
    await registry.get_stored(req.worker_id)  # NOT_FOUND for an unknown worker
    out = rs.GetWorkerMetricsResponse()
    buckets = Downsampler(window, limit) if window.step_ns else None
    samples = history.read(req.worker_id, start, window.end_ns)
    try:
        async for sample in samples:
            observed = observed_ns(sample)
            full = not buckets.offer(sample, observed) if buckets is not None else len(out.samples) == limit
            if full:  # the next page starts at this sample (observe times of a worker's samples are distinct)
                out.next_page_token = tokens.issue(f"{_TOKEN_PREFIX}{observed}", req)
                break
            if buckets is None:
                out.samples.append(sample)
    finally:
        await samples.aclose()
    if buckets is not None:
        out.buckets.extend(buckets.buckets())
    return out


def _resume_at(text: str) -> int:
    """The observe time (unix ns) a page token says the next page starts at."""
    digits = text.removeprefix(_TOKEN_PREFIX)
    if not text.startswith(_TOKEN_PREFIX) or not digits.isdigit():
        raise InvalidArgument("page_token", "not a token this registry issued")
    return int(digits)
