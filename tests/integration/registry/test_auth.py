"""The registry's API over real TLS on loopback (certificates made by trustme): no call without an identity,
none above the caller's role, every accepted change attributed to its caller; health and reflection open."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cml.monitor.v1 import events_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import registry_service_pb2_grpc as rs_grpc
from cmlmon_core.auth import Role, token_entry, write_auth_file
from cmlmon_core.tls import ClientTls
from cmlmon_dev.servers import free_port
from registry.entrypoints.main import run
from registry.settings import RegistrySettings
from tests.integration.registry.conftest import REGION, EventTap, eventually, registry_settings
from tests.integration.registry.test_skeleton import launch_plain_instance
from tests.tls_support import CertFiles, Pki

pytestmark = pytest.mark.integration

TOKENS = {"viewer": "tok-viewer-5b1e", "operator": "tok-operator-77ac", "admin": "tok-admin-c0de"}
PRINCIPALS = {"viewer": "vera", "operator": "otto", "admin": "ada"}


def auth_file(folder: Path, **certificates: Role) -> str:
    path = folder / "auth.yaml"
    write_auth_file(path, [token_entry(TOKENS[r], PRINCIPALS[r], Role.parse(r)) for r in TOKENS], certificates)
    return str(path)


@contextlib.asynccontextmanager
async def serving(settings: RegistrySettings) -> AsyncIterator[str]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run(settings, stop, ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiter], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
    try:
        yield f"localhost:{settings.grpc_port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def channel(address: str, pki: Pki, client: CertFiles | None = None) -> grpc.aio.Channel:
    tls = ClientTls(pki.ca_file, client.cert if client else "", client.key if client else "")
    return grpc.aio.secure_channel(address, tls.channel_credentials())


def bearer(role: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {TOKENS[role]}"),)


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def _next_about(watch: Any, worker_id: str) -> Any:
    while True:
        reply = await watch.read()
        if reply.worker.id == worker_id:
            return reply


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def secured(pki: Pki, tmp_path: Path, nats_url: str, aws_endpoint: str) -> RegistrySettings:
    server = pki.server()
    return registry_settings(nats_url, aws_endpoint, grpc_auth="required", grpc_auth_file=auth_file(tmp_path),
                             grpc_tls_cert_file=server.cert, grpc_tls_key_file=server.key)


async def test_calls_need_a_known_token_and_a_high_enough_role(
        secured: RegistrySettings, pki: Pki, tap: EventTap, ec2: Any, uid: str,
        caplog: pytest.LogCaptureFixture) -> None:
    instance = await launch_plain_instance(ec2, f"auth-{uid}")
    async with serving(secured) as address, channel(address, pki) as ch:
        stub = rs_grpc.WorkerRegistryServiceStub(ch)
        # health and reflection need nothing
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # Watch streams with context.write (a coroutine, not a generator): the server's wrappers keep that style
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
        first = await asyncio.wait_for(watch.read(), 10)
        watch.cancel()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(ch)
        async for reply in reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                list_services="")])):
            assert "cml.monitor.v1.WorkerRegistryService" in {s.name for s in reply.list_services_response.service}

        missing = await failure(stub.ListWorkers(rs.ListWorkersRequest()))
        assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
        wrong = await failure(stub.ListWorkers(rs.ListWorkersRequest(),
                                               metadata=(("authorization", "Bearer tok-guess-1234"),)))
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED and "tok-guess-1234" not in (wrong.details() or "")

        await stub.ListWorkers(rs.ListWorkersRequest(), metadata=bearer("viewer"))
        anonymous_watch = stub.WatchWorkers(rs.WatchWorkersRequest())  # a server stream is guarded too
        denied_watch = await failure(asyncio.wait_for(anonymous_watch.read(), 10))
        assert denied_watch.code() == grpc.StatusCode.UNAUTHENTICATED
        watch = stub.WatchWorkers(rs.WatchWorkersRequest(), metadata=bearer("viewer"))
        importing = rs.ImportWorkerRequest(region=REGION, instance_id=instance)
        denied = await failure(stub.ImportWorker(importing, metadata=bearer("viewer")))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED and "operator" in (denied.details() or "")

        with caplog.at_level(logging.INFO):
            worker = (await stub.ImportWorker(importing, metadata=bearer("operator"))).worker
            try:  # a read: any viewer may ask for a worker's history
                await stub.GetWorkerMetrics(rs.GetWorkerMetricsRequest(worker_id=worker.id), metadata=bearer("viewer"))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            await stub.StopWorker(rs.StopWorkerRequest(id=worker.id), metadata=bearer("operator"))
            denied = await failure(stub.TerminateWorker(rs.TerminateWorkerRequest(id=worker.id),
                                                        metadata=bearer("operator")))
            assert denied.code() == grpc.StatusCode.PERMISSION_DENIED and "admin" in (denied.details() or "")
            await stub.TerminateWorker(rs.TerminateWorkerRequest(id=worker.id), metadata=bearer("admin"))
        watched = await eventually(lambda: _next_about(watch, worker.id), timeout=20)
        assert watched.worker.id == worker.id
        watch.cancel()

    def by(kind: int) -> str | None:
        found = tap.of(worker.id, kind)
        return found[0].principal if found else None

    assert await eventually(lambda: by(events_pb2.WORKER_EVENT_TYPE_TERMINATED)
                            or by(events_pb2.WORKER_EVENT_TYPE_STATUS_CHANGED))
    assert by(events_pb2.WORKER_EVENT_TYPE_IMPORTED) == "otto"
    assert by(events_pb2.WORKER_EVENT_TYPE_STOPPED) == "otto"
    ended = tap.of(worker.id, events_pb2.WORKER_EVENT_TYPE_TERMINATED) or tap.of(
        worker.id, events_pb2.WORKER_EVENT_TYPE_STATUS_CHANGED)
    assert ended[-1].principal == "ada"
    audit = [(r.__dict__.get("principal"), r.__dict__.get("method")) for r in caplog.records
             if r.__dict__.get("worker_id") == worker.id and r.getMessage() == "worker changed by a call"]
    assert audit == [("otto", "ImportWorker"), ("otto", "StopWorker"), ("ada", "TerminateWorker")]


async def test_plaintext_is_refused_by_a_tls_server_but_for_the_probe_port(secured: RegistrySettings) -> None:
    probe_port = free_port()
    settings = secured.model_copy(update={"grpc_health_port": probe_port})
    async with serving(settings) as address, grpc.aio.insecure_channel(address) as ch:
        refused = await failure(rs_grpc.WorkerRegistryServiceStub(ch).ListWorkers(
            rs.ListWorkersRequest(), metadata=bearer("admin"), timeout=20))
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(f"127.0.0.1:{probe_port}") as probe:  # as a Kubernetes grpc probe
            health = await health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=20)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            nothing_else = await failure(rs_grpc.WorkerRegistryServiceStub(probe).ListWorkers(
                rs.ListWorkersRequest(), metadata=bearer("admin"), timeout=20))
            assert nothing_else.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_client_certificate_subject_is_the_principal(
        pki: Pki, tmp_path: Path, nats_url: str, aws_endpoint: str, tap: EventTap, ec2: Any, uid: str) -> None:
    server = pki.server()
    settings = registry_settings(
        nats_url, aws_endpoint, grpc_auth="required",
        grpc_auth_file=auth_file(tmp_path, collector=Role.VIEWER, **{"ops-bot": Role.OPERATOR}),
        grpc_tls_cert_file=server.cert, grpc_tls_key_file=server.key, grpc_tls_client_ca_file=pki.ca_file)
    instance = await launch_plain_instance(ec2, f"mtls-{uid}")
    async with serving(settings) as address:
        async with channel(address, pki, pki.issue("collector")) as ch:
            stub = rs_grpc.WorkerRegistryServiceStub(ch)
            await stub.ListWorkers(rs.ListWorkersRequest())
            denied = await failure(stub.ImportWorker(rs.ImportWorkerRequest(region=REGION, instance_id=instance)))
            assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "collector" in (denied.details() or "") and "operator" in (denied.details() or "")
        async with channel(address, pki, pki.issue("ops-bot")) as ch:
            stub = rs_grpc.WorkerRegistryServiceStub(ch)
            # a bearer token sent with a certificate is the identity: here a viewer's, below the certificate's role
            as_token = await failure(stub.ImportWorker(rs.ImportWorkerRequest(region=REGION, instance_id=instance),
                                                       metadata=bearer("viewer")))
            assert as_token.code() == grpc.StatusCode.PERMISSION_DENIED
            assert PRINCIPALS["viewer"] in (as_token.details() or "")
            # and an unknown token is refused, not passed over for the certificate
            revoked = await failure(stub.ListWorkers(rs.ListWorkersRequest(),
                                                     metadata=(("authorization", "Bearer tok-revoked"),)))
            assert revoked.code() == grpc.StatusCode.UNAUTHENTICATED
            worker = (await stub.ImportWorker(rs.ImportWorkerRequest(region=REGION, instance_id=instance))).worker
        async with channel(address, pki, pki.issue("stranger")) as ch:
            unknown = await failure(rs_grpc.WorkerRegistryServiceStub(ch).ListWorkers(rs.ListWorkersRequest()))
            assert unknown.code() == grpc.StatusCode.UNAUTHENTICATED
        other_ca = Pki(tmp_path / "other")
        async with channel(address, pki, other_ca.issue("collector")) as ch:
            untrusted = await failure(rs_grpc.WorkerRegistryServiceStub(ch).ListWorkers(
                rs.ListWorkersRequest(), timeout=20))
            assert untrusted.code() == grpc.StatusCode.UNAVAILABLE
        async with channel(address, pki) as ch:  # no client certificate at all: no handshake
            bare = await failure(rs_grpc.WorkerRegistryServiceStub(ch).ListWorkers(
                rs.ListWorkersRequest(), metadata=bearer("admin"), timeout=20))
            assert bare.code() == grpc.StatusCode.UNAVAILABLE
    imported = await eventually(lambda: tap.of(worker.id, events_pb2.WORKER_EVENT_TYPE_IMPORTED))
    assert imported[0].principal == "ops-bot"


async def test_rotated_certificate_and_auth_file_take_effect_without_restart(
        secured: RegistrySettings, pki: Pki, tmp_path: Path) -> None:
    async with serving(secured) as address:
        async with channel(address, pki) as ch:
            await rs_grpc.WorkerRegistryServiceStub(ch).ListWorkers(rs.ListWorkersRequest(), metadata=bearer("viewer"))
        rotated = Pki(tmp_path / "rotated")
        fresh = rotated.server()
        for new, old in ((fresh.key, secured.grpc_tls_key_file), (fresh.cert, secured.grpc_tls_cert_file)):
            os.replace(new, old)
        write_auth_file(Path(secured.grpc_auth_file), [token_entry("tok-new-9f9f", "nina", Role.VIEWER)])

        async def new_certificate_and_token_work() -> bool:
            async with channel(address, rotated) as ch:
                try:
                    await rs_grpc.WorkerRegistryServiceStub(ch).ListWorkers(
                        rs.ListWorkersRequest(), metadata=(("authorization", "Bearer tok-new-9f9f"),), timeout=10)
                except grpc.aio.AioRpcError:
                    return False
                return True

        assert await eventually(new_certificate_and_token_work, timeout=30, interval=0.3)
        async with channel(address, rotated) as ch:  # the old token was revoked with the old file
            revoked = await failure(rs_grpc.WorkerRegistryServiceStub(ch).ListWorkers(
                rs.ListWorkersRequest(), metadata=bearer("viewer")))
            assert revoked.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_open_api_is_announced_by_a_warning(
        nats_url: str, aws_endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        async with serving(registry_settings(nats_url, aws_endpoint, grpc_auth="none")):
            pass
    assert any("GRPC_AUTH=none" in r.getMessage() for r in caplog.records)


def test_a_registry_without_authentication_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    env.update(NATS_URL=f"nats://127.0.0.1:{free_port()}", GRPC_PORT=str(free_port()), METRICS_PORT="0")
    done = subprocess.run([sys.executable, "-m", "registry"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "GRPC_AUTH_FILE" in done.stderr and "GRPC_AUTH=none" in done.stderr

    env["GRPC_AUTH_FILE"] = str(tmp_path / "absent.yaml")
    done = subprocess.run([sys.executable, "-m", "registry"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "GRPC_AUTH_FILE" in done.stderr and "absent.yaml" in done.stderr
