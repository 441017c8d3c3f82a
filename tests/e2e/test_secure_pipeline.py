"""The whole pipeline secured as in production: nats-server with TLS and one user per service restricted by the
permissions of deploy/nats/cmlmon-accounts.conf, the registry's gRPC over mTLS with tokens, the notifier's
over TLS, every secret given as a file. A hot worker's alert arrives; a service with a wrong NATS password
exits at once with a clear message; and no secret appears in any line any process wrote, nor in any gRPC
error, even when errors are provoked (failing sinks, a bad token, a NATS authentication failure)."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from cml.monitor.v1 import alert_pb2, alert_pb2_grpc
from cml.monitor.v1 import registry_service_pb2 as reg_pb2
from cml.monitor.v1 import registry_service_pb2_grpc as reg_grpc
from cmlmon_core.auth import Role, token_entry, write_auth_file
from cmlmon_core.tls import ClientTls
from cmlmon_dev.receiver import WebhookReceiver
from cmlmon_dev.servers import NatsServer, free_port
from tests.e2e.conftest import ServiceLauncher
from tests.e2e.test_pipeline import REGION, launch_hot_instance, put_cpu
from tests.support import eventually
from tests.tls_support import Pki

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("registry", "collector", "notifier", "autopilot")  # every user of cmlmon-accounts.conf


@dataclass
class SecureSetup:
    nats: NatsServer
    pki: Pki
    folder: Path
    secrets: dict[str, str]  # name -> distinctive value that must never be seen

    def secret_file(self, name: str, value: str) -> str:
        self.secrets[name] = value
        path = self.folder / "secrets" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(value + "\n")
        return str(path)

    def nats_env(self, service: str, password: str | None = None) -> dict[str, str]:
        pw = password if password is not None else self.secrets[f"nats-{service}"]
        return {"NATS_URL": self.nats.url, "NATS_TLS_CA_FILE": self.pki.ca_file, "NATS_USER": service,
                "NATS_PASSWORD_FILE": self.secret_file(f"nats-password-{service}-{len(self.secrets)}", pw),
                "NATS_INBOX_PREFIX": f"_INBOX.{service}"}


@pytest.fixture
def secure(tmp_path: Path, uid: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SecureSetup]:
    pki = Pki(tmp_path / "pki")
    cert = pki.server()
    shutil.copy(ROOT / "deploy" / "nats" / "cmlmon-accounts.conf", tmp_path / "cmlmon-accounts.conf")
    config = tmp_path / "nats-server.conf"
    config.write_text(f'tls {{\n  cert_file: "{cert.cert}"\n  key_file: "{cert.key}"\n}}\n'
                      "include ./cmlmon-accounts.conf\n")
    secrets = {f"nats-{s}": f"natspw-{s}-{uid}-Zq" for s in SERVICES}
    for service in SERVICES:  # the server reads its users' passwords from its environment
        monkeypatch.setenv(f"CMLMON_{service.upper()}_NATS_PASSWORD", secrets[f"nats-{service}"])
    # the file's fourth user (the autopilot, not run here) must have a password for the server to start
    monkeypatch.setenv("CMLMON_AUTOPILOT_NATS_PASSWORD", f"natspw-autopilot-{uid}-Zq")
    with NatsServer(tmp_path / "jetstream", log_file=tmp_path / "nats-server.log", config_file=config) as server:
        yield SecureSetup(server, pki, tmp_path, secrets)


@pytest.fixture
def launcher(secure: SecureSetup, aws_endpoint: str, tmp_path: Path) -> Iterator[ServiceLauncher]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRPC_", "NATS_", "AWS_"))}
    env.update({"AWS_ENDPOINT_URL": aws_endpoint, "AWS_REGION": REGION, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO",
                "METRICS_PORT": "0", "GRPC_AUTH": "required",
                "AWS_ACCESS_KEY_ID_FILE": secure.secret_file("aws-key", "AKIASECRETKEYID7Q"),
                "AWS_SECRET_ACCESS_KEY_FILE": secure.secret_file("aws-secret", "awsSecretAccessKey-Xy9-leakcheck")})
    launcher = ServiceLauncher(env, tmp_path)
    try:
        yield launcher
    finally:
        launcher.stop_all()
        for proc in launcher.started:
            print(f"----- {proc.name} log -----\n{proc.log()}")


def leaks(secrets: dict[str, str], texts: dict[str, str]) -> list[str]:
    return [f"{name} in {where}" for where, text in texts.items() for name, value in secrets.items()
            if value in text]


async def test_secured_pipeline_alerts_and_leaks_no_secret(
        secure: SecureSetup, launcher: ServiceLauncher, aws_endpoint: str, uid: str) -> None:
    pki, folder = secure.pki, secure.folder
    server = pki.server()
    admin, viewer = f"admintok-{uid}-Kp", f"viewertok-{uid}-Wd"
    secure.secrets.update({"admin-token": admin, "viewer-token": viewer})
    auth = folder / "auth.yaml"
    collector_token = f"collectortok-{uid}-Vb"
    write_auth_file(auth, [token_entry(admin, "ada", Role.ADMIN), token_entry(viewer, "vic", Role.VIEWER),
                           token_entry(collector_token, "collector", Role.VIEWER)])
    registry_port, notifier_port = free_port(), free_port()
    instance_id = launch_hot_instance(aws_endpoint, f"hot-{uid}")
    put_cpu(aws_endpoint, instance_id, 97.5)
    webhook_secret = "whsec_" + base64.b64encode(f"signing-{uid}-secret".encode()).decode()
    grpc_errors: list[str] = []

    # good checks the Standard Webhooks signature (401 otherwise); bad fails every delivery
    async with WebhookReceiver(secret=webhook_secret) as good, WebhookReceiver(responses=[500] * 10_000) as bad:
        hook_token, slack_token = f"hooktok{uid}Rr", f"slacktok{uid}Tt"
        grpc_tls = {"GRPC_AUTH_FILE": str(auth), "GRPC_TLS_CERT_FILE": server.cert, "GRPC_TLS_KEY_FILE": server.key}
        launcher.start("registry", GRPC_PORT=registry_port, GRPC_TLS_CLIENT_CA_FILE=pki.ca_file, **grpc_tls,
                       REGISTRY_PAGE_TOKEN_SECRET_FILE=secure.secret_file("page-secret", f"pagesecret-{uid}-Hh"),
                       **secure.nats_env("registry"))
        collector_cert = pki.issue("collector")
        fast = {"WORKER_METRICS_POLL_INTERVAL": 2, "CLOUDWATCH_DELAY_SECONDS": 0}
        launcher.start("collector", REGISTRY_ADDRESS=f"localhost:{registry_port}", REGISTRY_TLS_CA_FILE=pki.ca_file,
                       REGISTRY_TLS_CERT_FILE=collector_cert.cert, REGISTRY_TLS_KEY_FILE=collector_cert.key,
                       REGISTRY_TOKEN_FILE=secure.secret_file("collector-token", collector_token),
                       RECONCILE_INTERVAL_SECONDS=2, TICK_REGION_LEASE_SECONDS=3, **fast,
                       **secure.nats_env("collector"))
        launcher.start(
            "notifier", GRPC_PORT=notifier_port, **grpc_tls, ALERT_FOR_SECONDS=0, **fast,
            DELIVERY_MAX_ATTEMPTS=2, DELIVERY_BACKOFF_INITIAL_SECONDS=0.1, DELIVERY_BACKOFF_MAX_SECONDS=0.2,
            WORKER_NOTIFICATION_WEBHOOKS_FILE=secure.secret_file(
                "webhooks", f"{good.url}/hook?token={hook_token},{bad.url}/broken/{hook_token}x"),
            WEBHOOK_SECRET_FILE=secure.secret_file("webhook-secret", webhook_secret),
            SLACK_WEBHOOK_URL_FILE=secure.secret_file("slack", f"{bad.url}/services/T0/B0/{slack_token}"),
            PAGERDUTY_ROUTING_KEY_FILE=secure.secret_file("pagerduty", f"pdkey{uid}Uu"),
            PAGERDUTY_URL=f"{bad.url}/v2/enqueue", **secure.nats_env("notifier"))
        secure.secrets.update({"hook-token": hook_token, "slack-token": slack_token,
                               "webhook-secret-base64": webhook_secret.removeprefix("whsec_")})

        ops = pki.issue("ops-laptop")  # not mapped to a role: its token decides
        tls = ClientTls(pki.ca_file, ops.cert, ops.key).channel_credentials()
        async with grpc.aio.secure_channel(f"localhost:{registry_port}", tls) as channel:
            await asyncio.wait_for(channel.channel_ready(), 60)
            stub = reg_grpc.WorkerRegistryServiceStub(channel)
            bad_token = f"badtok-{uid}-Gg"
            secure.secrets["bad-token"] = bad_token
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListWorkers(reg_pb2.ListWorkersRequest(),
                                       metadata=(("authorization", f"Bearer {bad_token}"),))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            grpc_errors.append(refused.value.details() or "")
            reply = await stub.ImportWorker(reg_pb2.ImportWorkerRequest(region=REGION, instance_id=instance_id),
                                            metadata=(("authorization", f"Bearer {admin}"),), timeout=20)
        worker = reply.worker

        alert = await good.wait_for(lambda r: r.json().get("status") == "firing", timeout=90)
        assert alert.json()["worker"]["id"] == worker.id and alert.path == "/hook"
        assert not good.rejected  # every delivery was signed with WEBHOOK_SECRET (read from its file)
        assert await eventually(lambda: {r.path.split("/")[1] for r in bad.rejected} >= {"services", "v2", "broken"},
                                timeout=30)  # Slack, PagerDuty and the second webhook failed

        notifier_tls = ClientTls(pki.ca_file).channel_credentials()
        async with grpc.aio.secure_channel(f"localhost:{notifier_port}", notifier_tls) as channel:
            alerts = await alert_pb2_grpc.AlertServiceStub(channel).ListAlerts(
                alert_pb2.ListAlertsRequest(worker_id=worker.id), metadata=(("authorization", f"Bearer {viewer}"),),
                timeout=20)
            assert "cpu_high" in [a.rule for a in alerts.alerts]

        # A NATS authentication failure: a second collector with a wrong password stops at once, saying why.
        wrong = f"wrongpw-{uid}-Jj"
        secure.secrets["wrong-password"] = wrong
        started = time.monotonic()
        intruder = launcher.start("collector", **secure.nats_env("collector", password=wrong))
        code = await asyncio.to_thread(intruder.process.wait, 30)
        assert code != 0 and time.monotonic() - started < 30
        assert f"127.0.0.1:{secure.nats.port}" in intruder.log() and "Authorization Violation" in intruder.log()

    launcher.stop_all()
    texts = {p.log_path.name: p.log() for p in launcher.started}
    texts["nats-server.log"] = (folder / "nats-server.log").read_text(errors="replace")
    texts["grpc errors"] = "\n".join(grpc_errors)
    violations = [line for text in texts.values() for line in text.splitlines()
                  if "publish violation" in line.lower() or "subscription violation" in line.lower()
                  or "permissions violation" in line.lower()]
    assert not violations, "\n".join(violations[:20])  # the documented permissions are enough
    assert "schedules reconciled" in texts["collector-1.log"]  # its ListWorkers passed mTLS and its token
    found = leaks(secure.secrets, texts)
    assert not found, found  # names where they were found, not the values
