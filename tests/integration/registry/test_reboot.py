"""RebootWorker: EC2's RebootInstances for a running worker (counted at a proxy in front of moto), its state
unchanged; FAILED_PRECONDITION, and no call to EC2, for a worker that is not running."""

from __future__ import annotations

import grpc
import pytest
from nats.js import JetStreamContext

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import worker_pb2
from cmlmon_dev.aws_proxy import CountingAwsProxy
from registry.adapters.repository import decode_value
from tests.integration.registry.conftest import RunningRegistry, eventually, registry_settings, running_registry
from tests.integration.registry.test_lifecycle import code_of, create, status_is
from tests.integration.registry.test_skeleton import publish_sample

pytestmark = pytest.mark.integration


async def settled(registry: RunningRegistry, js: JetStreamContext, worker_id: str) -> worker_pb2.Worker | None:
    """The worker as served once its outbox is settled: the status change is saved with its pending event, then
    saved again without it once published (a second revision), so an etag read before that is already stale."""
    entry = await (await js.key_value("cml_workers")).get(worker_id)
    if entry.revision is None or decode_value(entry.value or b"", entry.revision).pending is not None:
        return None
    served = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker_id))).worker
    return served if served.etag == str(entry.revision) else None


async def test_reboot_asks_ec2_for_a_running_worker_only(nats_url: str, aws_endpoint: str, js: JetStreamContext,
                                                         uid: str) -> None:
    async with (CountingAwsProxy(aws_endpoint) as aws,
                running_registry(registry_settings(nats_url, aws.url)) as registry):
        worker = await create(registry, uid)
        assert worker.status == worker_pb2.WORKER_STATUS_PENDING
        refused = registry.stub.RebootWorker(rs.RebootWorkerRequest(id=worker.id))
        assert await code_of(refused) == grpc.StatusCode.FAILED_PRECONDITION
        await publish_sample(js, worker, status=worker_pb2.WORKER_STATUS_RUNNING)
        await eventually(lambda: status_is(registry, worker.id, worker_pb2.WORKER_STATUS_RUNNING))
        before = await eventually(lambda: settled(registry, js, worker.id))
        assert aws.made("RebootInstances") == 0
        rebooted = (await registry.stub.RebootWorker(rs.RebootWorkerRequest(id=worker.id))).worker
        assert aws.made("RebootInstances", worker.instance_id) == 1
        assert rebooted.status == worker_pb2.WORKER_STATUS_RUNNING and rebooted.etag == before.etag
