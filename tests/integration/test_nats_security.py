"""cmlmon_core.nats_conn against real nats-servers configured with a token, NKey users and mutual TLS: the right
credentials connect (and JetStream answers), wrong ones end the start at once with the server and the reason,
never the secret."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

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
