"""docker-compose.yml's secured gRPC, proven by its content and the files `python -m cmlmon_dev.compose_secrets`
makes: every /run/secrets path a service is given is a secret mounted into it and a file the helper writes; with
those files the registry and the notifier pass their start-up security check (auth file, TLS pair), and the
collector's token is a viewer's in that auth file, the autopilot's an operator's."""

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
from tests.integration.deploy.test_compose import COMPOSE, cmlmon_services, environment, service_of

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
