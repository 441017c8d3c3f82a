"""Metric history, the pure part: which samples a window holds, and their downsampling into buckets of one step
(min/avg/max per metric). Reading the samples is the adapter's (registry.adapters.history)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cml.monitor.v1 import events_pb2, registry_service_pb2, worker_pb2


@dataclass(frozen=True, slots=True)
class Window:
    """[start, end) in unix nanoseconds of observe_time; step_ns 0 for raw samples."""

    start_ns: int
    end_ns: int
    step_ns: int = 0

    def holds(self, observed_ns: int) -> bool:
        return self.start_ns <= observed_ns < self.end_ns

    def bucket_of(self, observed_ns: int) -> int:
        return (observed_ns - self.start_ns) // self.step_ns


@dataclass(slots=True)
class _Summary:
    low: float
    high: float
    total: float = 0.0
    count: int = 0

    def add(self, value: float) -> None:  # on every sample of a window: comparisons, not min()/max() calls
        if value < self.low:
            self.low = value
        elif value > self.high:
            self.high = value
        self.total += value
        self.count += 1

    def message(self) -> registry_service_pb2.MetricSummary:
        return registry_service_pb2.MetricSummary(min=self.low, avg=self.total / self.count, max=self.high)


@dataclass(slots=True)
class _Bucket:
    index: int
    count: int = 0
    cpu: _Summary | None = None
    memory: _Summary | None = None
    status: worker_pb2.WorkerStatus = worker_pb2.WORKER_STATUS_UNSPECIFIED


def _add(summary: _Summary | None, sample: events_pb2.MetricSample, name: str) -> _Summary | None:
    if not sample.HasField(name):  # type: ignore[arg-type]
        return summary
    value: float = getattr(sample, name)
    summary = summary or _Summary(value, value)
    summary.add(value)
    return summary


@dataclass(slots=True)
class Downsampler:
    """Buckets of one step, at most `limit` of them: offer() refuses a sample that would open one more."""

    window: Window
    limit: int
    _buckets: dict[int, _Bucket] = field(default_factory=dict)

    def offer(self, sample: events_pb2.MetricSample, observed_ns: int) -> bool:
        index = self.window.bucket_of(observed_ns)
        bucket = self._buckets.get(index)
        if bucket is None:
            if len(self._buckets) == self.limit:
                return False
            bucket = self._buckets[index] = _Bucket(index)
        bucket.count += 1
        bucket.cpu = _add(bucket.cpu, sample, "cpu_utilization")
        bucket.memory = _add(bucket.memory, sample, "memory_utilization")
        bucket.status = sample.status
        return True

    def __len__(self) -> int:
        return len(self._buckets)

    def buckets(self) -> list[registry_service_pb2.MetricBucket]:
        out = []
        for bucket in sorted(self._buckets.values(), key=lambda b: b.index):
            message = registry_service_pb2.MetricBucket(sample_count=bucket.count, status=bucket.status)
            message.start_time.FromNanoseconds(self.window.start_ns + bucket.index * self.window.step_ns)
            if bucket.cpu is not None:
                message.cpu_utilization.CopyFrom(bucket.cpu.message())
            if bucket.memory is not None:
                message.memory_utilization.CopyFrom(bucket.memory.message())
            out.append(message)
        return out
