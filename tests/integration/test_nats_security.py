"""cmlmon_core.nats_conn against real nats-servers configured with a token, NKey users, a .creds file (operator
mode, JWTs signed here with nkeys) and mutual TLS: the right credentials connect (and JetStream answers), wrong
ones end the start at once with the server and the reason, never the secret."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]
import pytest

from cmlmon_core.lifecycle import StartupError
from cmlmon_core.nats_conn import connect
from cmlmon_core.settings import CommonSettings
from cmlmon_dev.servers import NatsServer
from tests.tls_support import Pki

pytestmark = pytest.mark.integration


def server(tmp_path: Path, config: str) -> NatsServer:
    path = tmp_path / "nats.conf"
    path.write_text(config)
    return NatsServer(tmp_path / "js", log_file=tmp_path / "nats.log", config_file=path)


async def works(settings: CommonSettings) -> None:
    async with connect(settings, "probe") as nc:
        info = await nc.jetstream().account_info()
        assert info is not None


async def refused(settings: CommonSettings) -> str:
    started = time.monotonic()
    with pytest.raises(StartupError) as caught:
        await asyncio.wait_for(works(settings), 30)
    assert time.monotonic() - started < 15
    return str(caught.value)


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[NatsServer]:
    with server(tmp_path, 'authorization { token: "tok-right-8d1f" }\n') as s:
        yield s


async def test_token(token_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("tok-right-8d1f\n")
    monkeypatch.setenv("NATS_TOKEN_FILE", str(tmp_path / "token"))
    await works(CommonSettings(nats_url=token_server.url))
    monkeypatch.delenv("NATS_TOKEN_FILE")
    message = await refused(CommonSettings(nats_url=token_server.url, nats_token="tok-wrong-77e0"))
    assert f"127.0.0.1:{token_server.port}" in message and "Authorization Violation" in message
    assert "tok-wrong-77e0" not in message


async def test_nkey_seed_file(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    (tmp_path / "user.nk").write_bytes(seed)
    stranger = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    (tmp_path / "stranger.nk").write_bytes(stranger)
    with server(tmp_path, f'authorization {{ users: [{{ nkey: "{public}" }}] }}\n') as s:
        await works(CommonSettings(nats_url=s.url, nats_nkey_seed_file=str(tmp_path / "user.nk")))
        message = await refused(CommonSettings(nats_url=s.url, nats_nkey_seed_file=str(tmp_path / "stranger.nk")))
        assert stranger.decode() not in message


async def test_mutual_tls(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    cert, client = pki.server(), pki.issue("collector")
    config = (f'tls {{\n  cert_file: "{cert.cert}"\n  key_file: "{cert.key}"\n  ca_file: "{pki.ca_file}"\n'
              "  verify: true\n}\n")
    with server(tmp_path, config) as s:
        await works(CommonSettings(nats_url=s.url, nats_tls_ca_file=pki.ca_file, nats_tls_cert_file=client.cert,
                                   nats_tls_key_file=client.key))
        other = Pki(tmp_path / "other")  # the server's certificate is not signed by this CA
        message = await refused(CommonSettings(nats_url=s.url, nats_tls_ca_file=other.ca_file))
        assert "TLS" in message and f"127.0.0.1:{s.port}" in message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _keypair(prefix: int) -> tuple[bytes, Any]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return seed, nkeys.from_seed(bytearray(seed))


def _jwt(issuer: Any, subject: str, nats_claims: dict[str, Any]) -> str:
    """A NATS JWT (v2) as nsc would make it: ed25519-nkey signature of the issuer over header.claims."""
    claims: dict[str, Any] = {"jti": "", "iat": int(time.time()), "iss": issuer.public_key.decode(),
                              "name": subject[:8], "sub": subject, "nats": {**nats_claims, "version": 2}}
    digest = hashlib.sha256(json.dumps(claims, separators=(",", ":")).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    body = ".".join(_b64(json.dumps(part, separators=(",", ":")).encode())
                    for part in ({"typ": "JWT", "alg": "ed25519-nkey"}, claims))
    return f"{body}.{_b64(issuer.sign(body.encode()))}"


def _creds(account: Any, path: Path) -> None:
    seed, user = _keypair(nkeys.PREFIX_BYTE_USER)
    user_jwt = _jwt(account, user.public_key.decode(), {"type": "user", "pub": {}, "sub": {}, "subs": -1,
                                                         "data": -1, "payload": -1})
    path.write_text(f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
                    f"-----BEGIN USER NKEY SEED-----\n{seed.decode()}\n------END USER NKEY SEED------\n")


async def test_creds_file(tmp_path: Path) -> None:
    _, operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    _, account = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, stranger = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)  # an account the server does not trust
    _, system = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)  # JetStream needs one
    limits = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1,
              "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    operator_jwt = _jwt(operator, operator.public_key.decode(), {"type": "operator"})
    account_jwt = _jwt(operator, account.public_key.decode(), {"type": "account", "limits": limits})
    system_jwt = _jwt(operator, system.public_key.decode(), {"type": "account"})
    _creds(account, tmp_path / "service.creds")
    _creds(stranger, tmp_path / "stranger.creds")
    config = (f'operator: "{operator_jwt}"\nsystem_account: {system.public_key.decode()}\nresolver: MEMORY\n'
              f'resolver_preload: {{\n  {account.public_key.decode()}: "{account_jwt}"\n'
              f'  {system.public_key.decode()}: "{system_jwt}"\n}}\n')
    with server(tmp_path, config) as s:
        await works(CommonSettings(nats_url=s.url, nats_creds_file=str(tmp_path / "service.creds")))
        message = await refused(CommonSettings(nats_url=s.url, nats_creds_file=str(tmp_path / "stranger.creds")))
        assert f"127.0.0.1:{s.port}" in message


async def test_a_start_abandoned_while_nats_is_unreachable_leaves_no_retry_behind() -> None:
    from cmlmon_dev.servers import free_port

    attempt = asyncio.create_task(works(CommonSettings(nats_url=f"nats://127.0.0.1:{free_port()}")))
    await asyncio.sleep(1.5)  # connecting, retrying every second
    assert not attempt.done()
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
