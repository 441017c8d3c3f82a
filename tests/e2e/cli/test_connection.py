"""What the command line sends and how it connects: the bearer token (flag, variable, file, .run/token), TLS
with a CA and a client certificate, and exit code 4 when the server says no. The server here is a real gRPC
server on loopback that checks the token as an authenticating registry would."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import registry_service_pb2_grpc as rs_grpc
from cml.monitor.v1 import worker_pb2
from cmlmon_dev.servers import free_port
from tests.e2e.cli.support import Fleet

pytestmark = pytest.mark.e2e
TOKENS = {"op-token": "operator", "viewer-token": "viewer"}


@dataclass
class CheckingRegistry(rs_grpc.WorkerRegistryServiceServicer):
    """GetWorker for callers with a known token; StopWorker for operators only. Records what callers sent."""

    seen: list[dict[str, str]] = field(default_factory=list)

    def _role(self, context: grpc.ServicerContext) -> str:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.seen.append(metadata)
        token = metadata.get("authorization", "").removeprefix("Bearer ")
        if token not in TOKENS:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
        return TOKENS[token]

    def GetWorker(self, request: rs.GetWorkerRequest, context: grpc.ServicerContext) -> rs.GetWorkerResponse:
        self._role(context)
        return rs.GetWorkerResponse(worker=worker_pb2.Worker(id=request.id, name="w", region="us-east-1"))

    def StopWorker(self, request: rs.StopWorkerRequest, context: grpc.ServicerContext) -> rs.StopWorkerResponse:
        if self._role(context) != "operator":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "viewer may not call StopWorker")
        return rs.StopWorkerResponse(worker=worker_pb2.Worker(id=request.id))


@dataclass
class Served:
    address: str
    servicer: CheckingRegistry


@pytest.fixture
def checking_registry() -> Iterator[Served]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = CheckingRegistry()  # type: ignore[abstract]  # the RPCs it does not define answer UNIMPLEMENTED
    rs_grpc.add_WorkerRegistryServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield Served(f"127.0.0.1:{port}", servicer)
    server.stop(None)


def test_token_from_flag_variable_file_or_run_token(fleet: Fleet, checking_registry: Served, tmp_path: Path) -> None:
    def get(*flags: str, cwd: Path | None = None, **env: str) -> Any:
        return fleet.run(*flags, "workers", "get", "w-1", CMLMON_REGISTRY=checking_registry.address,
                         **env)  # type: ignore[arg-type]  # env holds variables only, never `timeout`

    anonymous = get()
    assert anonymous.returncode == 4
    assert anonymous.stderr == "error: UNAUTHENTICATED: a valid bearer token is required\n"
    assert "authorization" not in checking_registry.servicer.seen[-1]

    assert get("--token", "op-token").returncode == 0
    assert get(CMLMON_TOKEN="op-token").returncode == 0
    token_file = tmp_path / "token"
    token_file.write_text("op-token\n")
    assert get("--token-file", str(token_file)).returncode == 0
    assert get(CMLMON_TOKEN_FILE=str(token_file)).returncode == 0
    assert checking_registry.servicer.seen[-1]["authorization"] == "Bearer op-token"

    run_dir = fleet.cwd / ".run"  # what `make run` writes when the services need a token
    run_dir.mkdir(exist_ok=True)
    (run_dir / "token").write_text("op-token")
    try:
        assert get().returncode == 0
    finally:
        (run_dir / "token").unlink()

    denied = fleet.run("--token", "viewer-token", "workers", "stop", "w-1", CMLMON_REGISTRY=checking_registry.address)
    assert denied.returncode == 4 and "PERMISSION_DENIED: viewer may not call StopWorker" in denied.stderr
    missing = get(CMLMON_TOKEN_FILE=str(tmp_path / "absent"))
    assert missing.returncode == 2 and "absent" in missing.stderr and "Traceback" not in missing.stderr


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(x509.SubjectAlternativeName([loopback]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_tls_with_a_ca_and_a_client_certificate(fleet: Fleet, tmp_path: Path) -> None:
    ca_key = _key()
    ca = _cert("test CA", ca_key, None, ca_key, ca=True)
    server_key, client_key = _key(), _key()
    server_cert = _cert("127.0.0.1", server_key, ca, ca_key, ca=False)
    client_cert = _cert("operator", client_key, ca, ca_key, ca=False)
    files = {"ca.pem": _pem(ca), "client.pem": _pem(client_cert), "client.key": _pem(client_key)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = CheckingRegistry()  # type: ignore[abstract]  # the RPCs it does not define answer UNIMPLEMENTED
    rs_grpc.add_WorkerRegistryServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    creds = grpc.ssl_server_credentials([(_pem(server_key), _pem(server_cert))], root_certificates=_pem(ca),
                                        require_client_auth=True)
    port = server.add_secure_port(f"127.0.0.1:{free_port()}", creds)
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        mutual = fleet.run("--token", "op-token", "workers", "get", "w-1", "-o", "json", CMLMON_REGISTRY=address,
                           CMLMON_CA=str(tmp_path / "ca.pem"), CMLMON_CERT=str(tmp_path / "client.pem"),
                           CMLMON_KEY=str(tmp_path / "client.key"))
        assert mutual.returncode == 0, mutual.stderr
        no_client_cert = fleet.run("--ca", str(tmp_path / "ca.pem"), "--token", "op-token", "workers", "get", "w-1",
                                   CMLMON_REGISTRY=address)
        assert no_client_cert.returncode == 1 and no_client_cert.stderr.startswith("error: UNAVAILABLE: ")
        plaintext = fleet.run("--token", "op-token", "workers", "get", "w-1", CMLMON_REGISTRY=address)
        assert plaintext.returncode == 1 and plaintext.stderr.startswith("error: UNAVAILABLE: ")
        half = fleet.run("--ca", str(tmp_path / "ca.pem"), "--cert", str(tmp_path / "client.pem"), "workers", "get",
                         "w-1", CMLMON_REGISTRY=address)
        assert half.returncode == 2 and "--cert and --key go together" in half.stderr
    finally:
        server.stop(None)


def test_shell_completion_offers_commands_and_values(fleet: Fleet) -> None:
    def complete(words: str) -> list[str]:
        done = fleet.run(_CMLMON_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(len(words.split()) - 1))
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("cmlmon wor") == ["workers"]
    assert complete("cmlmon workers list --status st") == ["stopping", "stopped"]
    script = fleet.run("--show-completion", "bash")
    assert script.returncode == 0 and "_CMLMON_COMPLETE=complete_bash" in script.stdout
