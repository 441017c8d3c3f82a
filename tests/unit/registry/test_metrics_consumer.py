"""handle_batch over fakes: a failed acknowledgement of one message does not keep the rest of the batch from
being applied and acknowledged."""

from __future__ import annotations

from nats.errors import ConnectionClosedError

from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_core import messages
from registry.entrypoints.metrics_consumer import handle_batch
from registry.service.handlers import Registry
from registry.service.view import WorkerView
from tests.unit.registry.fakes import FakeEc2, FakePublisher, FakeRepo


class FakeMsg:
    subject = "cml.metrics.us-east-1.w"

    def __init__(self, data: bytes, headers: dict[str, str], fail_term: bool = False) -> None:
        self.data, self.headers = data, headers
        self.replies: list[str] = []
        self._fail_term = fail_term

    async def ack(self) -> None:
        self.replies.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.replies.append("nak")

    async def term(self) -> None:
        self.replies.append("term")
        if self._fail_term:
            raise ConnectionClosedError


async def test_a_failed_term_does_not_stop_the_rest_of_the_batch() -> None:
    registry = Registry(FakeRepo(), FakeEc2(), FakePublisher(), WorkerView())
    worker = await registry.create_worker(rs.CreateWorkerRequest(
        request_id="r1", name="one", region="us-east-1", instance_type="t3.micro", ami_id="ami-12345678"))
    sample = events_pb2.MetricSample(worker_id=worker.id, region=worker.region, instance_id=worker.instance_id,
                                     status=worker_pb2.WORKER_STATUS_RUNNING, cpu_utilization=42.0)
    sample.observe_time.GetCurrentTime()
    junk = FakeMsg(b"\xff\xfe", {"Content-Type": "application/json"}, fail_term=True)
    good = FakeMsg(*messages.encode(sample))
    await handle_batch(registry, [junk, good])  # type: ignore[list-item]
    assert junk.replies == ["term"] and good.replies == ["ack"]
    assert (await registry.get_worker(worker.id)).cpu_utilization == 42.0
