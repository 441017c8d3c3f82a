"""docker-compose.yml's secured gRPC, proven by its content and the files `python -m cmlmon_dev.compose_secrets`
makes: every /run/secrets path a service is given is a secret mounted into it and a file the helper writes; with
those files the registry and the notifier pass their start-up security check (auth file, TLS pair), and the
collector's token is a viewer's in that auth file, the autopilot's an operator's; every `*_FILE` variable names
such a secret; each NATS node mounts the secrets its configuration names, and each service is given its own NATS
user, password file, inbox prefix and the CA (test_compose.py runs the nodes and connects with them)."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import pytest

from cmlmon_core.auth import AuthPolicy, Role
from cmlmon_core.grpc_server import grpc_security
from cmlmon_core.settings import GrpcServerSettings
from cmlmon_dev import compose_secrets
from tests.integration.deploy.test_compose import (
    COMPOSE,
    NATS_NODES,
    ROOT,
    SERVICES,
    cmlmon_services,
    environment,
    service_of,
)

pytestmark = pytest.mark.integration

MOUNTED = re.compile(r"^/run/secrets/(.+)$")
COMPOSE_SECRETS: dict[str, Any] = COMPOSE.get("secrets") or {}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("compose") / "secrets"
    compose_secrets.main([str(folder)])
    return folder


def on_host(env: dict[str, str], made: Path) -> dict[str, str]:
    """The service's environment with /run/secrets/<name> replaced by the file the helper made."""
    return {k: str(made / m.group(1)) if (m := MOUNTED.match(v)) else v for k, v in env.items()}


@pytest.mark.parametrize("name", sorted(cmlmon_services()))
def test_every_secret_path_is_mounted_and_made(name: str, made: Path) -> None:
    svc: dict[str, Any] = cmlmon_services()[name]
    wanted = {m.group(1) for v in environment(svc).values() if (m := MOUNTED.match(v))}
    assert wanted, f"{name} is given no secret file"
    assert wanted == set(svc.get("secrets", [])), name
    for secret in wanted:
        assert secret in COMPOSE_SECRETS, f"{secret} is not declared under secrets:"
        assert COMPOSE_SECRETS[secret]["file"] == f"./secrets/{secret}"
        assert (made / secret).is_file(), f"compose_secrets does not make {secret}"


@pytest.mark.parametrize("name", ["registry", "notifier"])
def test_the_apis_start_with_tokens_and_tls(name: str, made: Path) -> None:
    env = on_host(environment(cmlmon_services()[name]), made)
    settings = GrpcServerSettings(grpc_auth="required",  # not this test process's GRPC_AUTH=none
                                  grpc_auth_file=env["GRPC_AUTH_FILE"], grpc_tls_cert_file=env["GRPC_TLS_CERT_FILE"],
                                  grpc_tls_key_file=env["GRPC_TLS_KEY_FILE"])
    security = grpc_security(settings)
    assert security.policy is not None and security.tls is not None
    assert service_of(cmlmon_services()[name]) == name


def test_the_collector_token_is_a_viewer_and_readable_in_the_container(made: Path) -> None:
    env = on_host(environment(cmlmon_services()["collector"]), made)
    token = Path(env["REGISTRY_TOKEN_FILE"]).read_text().strip()
    identity = AuthPolicy.load(made / "grpc-auth.yaml").by_token(token)
    assert identity is not None and identity.role is Role.VIEWER
    # compose mounts files as they are and the services run as uid 10001: what they read is readable by others
    for secret in {s for svc in cmlmon_services().values() for s in svc.get("secrets", [])}:
        assert (made / secret).stat().st_mode & stat.S_IROTH, secret
    assert not (made / "admin-token").stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)


def test_the_autopilot_token_is_an_operator_and_it_trusts_the_registry(made: Path) -> None:
    env = on_host(environment(cmlmon_services()["autopilot"]), made)
    token = Path(env["REGISTRY_TOKEN_FILE"]).read_text().strip()
    identity = AuthPolicy.load(made / "grpc-auth.yaml").by_token(token)
    assert identity is not None and identity.role is Role.OPERATOR  # it calls StopWorker and StartWorker
    registry = environment(cmlmon_services()["registry"])
    assert env["REGISTRY_TLS_CA_FILE"] and registry["GRPC_TLS_CERT_FILE"]
    assert Path(env["CML_PASSWORD_FILE"]).is_file()


@pytest.mark.parametrize("name", sorted(cmlmon_services()))
def test_every_file_variable_names_a_mounted_secret(name: str) -> None:
    svc: dict[str, Any] = cmlmon_services()[name]
    files = {k: v for k, v in environment(svc).items() if k.endswith("_FILE")}
    for variable, value in files.items():
        found = MOUNTED.match(value)
        assert found, f"{name}: {variable}={value} is no /run/secrets path"
        assert found.group(1) in svc.get("secrets", []), f"{name}: {variable} names a secret it does not mount"


@pytest.mark.parametrize("name", sorted(cmlmon_services()))
def test_every_service_is_its_own_nats_user_over_tls(name: str, made: Path) -> None:
    env = environment(cmlmon_services()[name])
    service = service_of(cmlmon_services()[name])
    assert env["NATS_USER"] == service
    assert env["NATS_PASSWORD_FILE"] == f"/run/secrets/nats-{service}-password"
    assert env["NATS_INBOX_PREFIX"] == f"_INBOX.{service}"  # the only replies its user may subscribe to
    assert env["NATS_TLS_CA_FILE"] == "/run/secrets/ca.pem"
    password = (made / f"nats-{service}-password").read_text().strip()
    assert len(password) >= 32
    assert f'password: "{password}"' in (made / "nats-accounts.conf").read_text()


@pytest.mark.parametrize("node", NATS_NODES)
def test_each_nats_node_mounts_what_its_configuration_names(node: str, made: Path) -> None:
    svc = SERVICES[node]
    command = svc["command"]
    config = command[command.index("--config") + 1]
    mounts = {target: source for source, target, *_ in (v.split(":") for v in svc["volumes"])}
    text = (ROOT / mounts[config]).read_text()
    includes = re.findall(r"^\s*include\s+(\S+)", text, re.MULTILINE)
    # nats-server resolves an include against the including file's folder
    named = {str(Path(config).parent.joinpath(i).resolve()) for i in includes}
    named |= set(re.findall(r'"(/run/secrets/[^"]+)"', text))
    assert named == {f"/run/secrets/{s}" for s in svc["secrets"]}, node
    for secret in svc["secrets"]:
        assert COMPOSE_SECRETS[secret]["file"] == f"./secrets/{secret}"
        assert (made / secret).is_file(), f"compose_secrets does not make {secret}"
        assert (made / secret).stat().st_mode & stat.S_IROTH, secret


def test_the_helper_keeps_the_nats_passwords_and_writes_the_accounts_with_them(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    compose_secrets.main([str(folder)])
    before = {p.name: p.read_text() for p in folder.glob("nats-*-password")}
    assert sorted(before) == sorted(f"nats-{s}-password" for s in compose_secrets.NATS_USERS)
    (folder / "nats-notifier-password").write_text("mine-Qx7\n")  # your own, kept as it is
    compose_secrets.main([str(folder)])
    after = {p.name: p.read_text() for p in folder.glob("nats-*-password")}
    assert after == {**before, "nats-notifier-password": "mine-Qx7\n"}
    accounts = (folder / "nats-accounts.conf").read_text()
    assert 'password: "mine-Qx7"' in accounts and "$CMLMON_" not in accounts
    assert accounts.count("password: ") == len(compose_secrets.NATS_USERS)
