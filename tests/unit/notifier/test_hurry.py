"""The sample consumer makes way for deliveries: a sample that causes a transition, and a batch a sink's consumer
fetched, start the shared hurry window (evaluation then yields after every sample); a sample that changes
nothing does not."""

from __future__ import annotations

import asyncio
import time

from cml.monitor.v1 import events_pb2, worker_pb2
from cmlmon_core.consuming import Hurry
from cmlmon_core.messages import encode
from notifier.domain.model import FiringPolicy
from notifier.entrypoints.consumers import SampleConsumer, SinkConsumer
from notifier.service.evaluator import Directory, Evaluator, Thresholds
from tests.unit.notifier.fakes import FakePublisher, FakeStore
from tests.unit.notifier.test_sink_consumer import FakeMsg, HangingDeliverer


class SampleMsg:
    def __init__(self, cpu: float) -> None:
        self.subject = "cml.metrics.us-east-1.w1"
        self.data, self.headers = encode(events_pb2.MetricSample(
            worker_id="w1", region="us-east-1", instance_id="i-01", status=worker_pb2.WORKER_STATUS_RUNNING,
            cpu_utilization=cpu))


async def test_a_sample_that_fires_starts_the_hurry_and_a_quiet_one_does_not() -> None:
    hurry = Hurry(60.0)
    evaluator = Evaluator(FakeStore(), FakePublisher(), Directory(),
                          FiringPolicy(for_seconds=0, min_samples=1, window_samples=1), Thresholds())
    consumer = SampleConsumer(evaluator, hurry)
    await consumer.handle(SampleMsg(10.0))  # type: ignore[arg-type]
    assert hurry.until == 0.0
    await consumer.handle(SampleMsg(99.0))  # type: ignore[arg-type]
    assert hurry.until > time.perf_counter()


async def test_a_batch_fetched_for_a_sink_starts_the_hurry() -> None:
    hurry = Hurry(60.0)
    consumer = SinkConsumer(HangingDeliverer(), publisher=None, concurrency=1, hurry=hurry)  # type: ignore[arg-type]
    await consumer.handle_batch([FakeMsg(1)])  # type: ignore[list-item]
    assert hurry.until > time.perf_counter()
    tasks = list(consumer._tasks)  # the hanging delivery
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


