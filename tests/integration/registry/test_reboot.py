"""RebootWorker: EC2's RebootInstances for a running worker (counted at a proxy in front of moto), its state
unchanged; FAILED_PRECONDITION, and no call to EC2, for a worker that is not running."""

from __future__ import annotations

import grpc
import pytest
from nats.js import JetStreamContext

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import worker_pb2
from cmlmon_dev.aws_proxy import CountingAwsProxy
from tests.integration.registry.conftest import eventually, registry_settings, running_registry
from tests.integration.registry.test_lifecycle import code_of, create, status_is
from tests.integration.registry.test_skeleton import publish_sample

pytestmark = pytest.mark.integration


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
        before = (await registry.stub.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
        assert aws.made("RebootInstances") == 0
        rebooted = (await registry.stub.RebootWorker(rs.RebootWorkerRequest(id=worker.id))).worker
        assert aws.made("RebootInstances", worker.instance_id) == 1
        assert rebooted.status == worker_pb2.WORKER_STATUS_RUNNING and rebooted.etag == before.etag
