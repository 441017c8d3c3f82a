"""Fakes of the registry's ports for unit tests of its logic; each implements its port (checked by mypy) and
honours the same contract (CAS by revision, create-only claims) as the real adapter."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

from botocore.exceptions import ClientError

from cml.monitor.v1 import events_pb2, worker_pb2
from cmlmon_core.aws import ClientSource
from registry.adapters.ec2 import Ec2, Instance, LaunchSpec
from registry.adapters.publisher import EventPublisher
from registry.adapters.repository import Claim, Stored, WorkerRepository, decode_value
from registry.adapters.wire import PendingEvent, encode_value
from registry.errors import Conflict, Unavailable


class FakeRepo(WorkerRepository):
    def __init__(self) -> None:
        self.values: dict[str, tuple[bytes, int]] = {}
        self.claims: dict[str, Claim] = {}
        self._seq = itertools.count(1)

    async def get(self, worker_id: str) -> Stored | None:
        await asyncio.sleep(0)  # interleave concurrent callers as a real store would
        found = self.values.get(worker_id)
        return decode_value(*found) if found else None

    async def create(self, worker: worker_pb2.Worker, pending: PendingEvent | None
                     ) -> Stored:
        await asyncio.sleep(0)
        if worker.id in self.values:
            raise Conflict(worker.id)
        return self._put(worker, pending)

    async def update(self, worker: worker_pb2.Worker, pending: PendingEvent | None,
                     revision: int) -> Stored:
        await asyncio.sleep(0)
        if self.values.get(worker.id, (b"", 0))[1] != revision:
            raise Conflict(worker.id)
        return self._put(worker, pending)

    def _put(self, worker: worker_pb2.Worker, pending: PendingEvent | None) -> Stored:
        data = encode_value(worker, pending)
        revision = next(self._seq)
        self.values[worker.id] = (data, revision)
        return decode_value(data, revision)

    async def watch(self) -> AsyncIterator[Stored | None]:
        for data, revision in list(self.values.values()):
            yield decode_value(data, revision)
        yield None

    async def get_claim(self, region: str, instance_id: str) -> Claim | None:
        await asyncio.sleep(0)  # interleave concurrent callers as a real store would
        return self.claims.get(f"{region}/{instance_id}")

    async def put_claim(self, region: str, instance_id: str, worker_id: str, revision: int | None) -> None:
        await asyncio.sleep(0)  # interleave concurrent callers as a real store would
        key = f"{region}/{instance_id}"
        current = self.claims.get(key)
        if (current.revision if current else None) != revision:
            raise Conflict(key)
        self.claims[key] = Claim(worker_id, next(self._seq), time.time())

    async def shared_secret(self, proposed: bytes) -> bytes:
        return proposed


class FakePublisher(EventPublisher):
    def __init__(self) -> None:
        self.events: list[events_pb2.WorkerEvent] = []
        self.fail = False

    async def publish(self, event: events_pb2.WorkerEvent, *, check_stream: bool = False) -> None:
        if self.fail:
            raise Unavailable("nats down")
        if check_stream and self.events and self.events[-1].event_id == event.event_id:
            return
        if any(e.event_id == event.event_id for e in self.events):
            return  # the server's duplicate window
        self.events.append(event)


class FakeEc2(Ec2):
    def __init__(self) -> None:
        self.instances: dict[str, Instance] = {}
        self.launches = 0
        self.reboots: list[str] = []

    async def launch(self, spec: LaunchSpec) -> Instance:
        await asyncio.sleep(0)  # EC2 takes a while; a concurrent caller may look meanwhile
        self.launches += 1
        instance = Instance(f"i-{self.launches:017x}", worker_pb2.WORKER_STATUS_PENDING, spec.instance_type,
                            spec.ami_id, dict(spec.tags))
        self.instances[instance.instance_id] = instance
        return instance

    async def find_by_tag(self, region: str, key: str, value: str) -> Instance | None:
        return next((i for i in self.instances.values() if i.tags.get(key) == value), None)

    async def describe(self, region: str, instance_id: str) -> Instance | None:
        return self.instances.get(instance_id)

    def _set(self, instance_id: str, status: worker_pb2.WorkerStatus) -> worker_pb2.WorkerStatus:
        old = self.instances[instance_id]
        self.instances[instance_id] = Instance(old.instance_id, status, old.instance_type, old.ami_id, old.tags)
        return status

    async def start(self, region: str, instance_id: str) -> worker_pb2.WorkerStatus:
        return self._set(instance_id, worker_pb2.WORKER_STATUS_PENDING)

    async def stop(self, region: str, instance_id: str) -> worker_pb2.WorkerStatus:
        return self._set(instance_id, worker_pb2.WORKER_STATUS_STOPPING)

    async def reboot(self, region: str, instance_id: str) -> None:
        self.reboots.append(instance_id)

    async def terminate(self, region: str, instance_id: str) -> worker_pb2.WorkerStatus:
        return self._set(instance_id, worker_pb2.WORKER_STATUS_SHUTTING_DOWN)


class RefusingClients(ClientSource):
    """AWS clients whose RunInstances fails with one error code."""

    def __init__(self, code: str) -> None:
        self.code = code

    async def get(self, service: str, region: str) -> Any:
        code = self.code

        class Client:
            async def run_instances(self, **kwargs: Any) -> Any:
                raise client_error(code)

        return Client()


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "Op")
