"""The gRPC credentials of `make run`: unless GRPC_AUTH=none (open, as before) or an auth file is given, a
fresh admin token for you, a viewer token for the collectors and an operator token for the autopilot, their
hashes in .run/auth.yaml, the admin token in .run/token (mode 0600) for scripts."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cmlmon_core.auth import Role, token_entry, write_auth_file
from cmlmon_core.grpc_client import GrpcTarget
from cmlmon_core.settings import RegistryClientSettings, load_settings


def _write_private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


@dataclass(frozen=True)
class LocalAuth:
    env: dict[str, str] = field(default_factory=dict)  # for every service
    token: str = ""  # what `make run` itself sends (an admin's, or REGISTRY_TOKEN given)
    token_file: Path | None = None
    autopilot_env: dict[str, str] = field(default_factory=dict)  # its operator token (it stops idle workers)

    def target(self, address: str) -> GrpcTarget:
        """How `make run` reaches the registry: its token, and REGISTRY_TLS_* when the registry serves TLS."""
        client = GrpcTarget.registry(load_settings(RegistryClientSettings))
        return GrpcTarget(address, self.token or client.token, client.tls)

    def usage(self, address: str) -> list[str]:
        tls = "-plaintext" if self.target(address).tls is None else "-cacert <CA file>"
        if not self.token_file:
            return [f"grpcurl {tls} {address} list" + ("   (gRPC authentication is off: GRPC_AUTH=none)"
                                                       if os.environ.get("GRPC_AUTH", "").lower() == "none" else "")]
        return [f"admin token           {self.token_file} (also: REGISTRY_TOKEN_FILE={self.token_file})",
                f"grpcurl {tls} -H \"authorization: Bearer $(cat {self.token_file})\" "
                f"{address} cml.monitor.v1.WorkerRegistryService/ListWorkers"]


def prepare(state: Path) -> LocalAuth:
    """Generate the credentials unless the environment already decides (GRPC_AUTH=none, GRPC_AUTH_FILE)."""
    if os.environ.get("GRPC_AUTH", "").lower() == "none" or os.environ.get("GRPC_AUTH_FILE"):
        return LocalAuth()
    admin, collector, autopilot = (secrets.token_urlsafe(32) for _ in range(3))
    auth_file = state / "auth.yaml"
    write_auth_file(auth_file, [token_entry(admin, "make-run-admin", Role.ADMIN),
                                token_entry(collector, "collector", Role.VIEWER),
                                token_entry(autopilot, "autopilot", Role.OPERATOR)])
    token_file, collector_file, autopilot_file = state / "token", state / "collector-token", state / "autopilot-token"
    _write_private(token_file, admin + "\n")
    _write_private(collector_file, collector + "\n")
    _write_private(autopilot_file, autopilot + "\n")
    env = {"GRPC_AUTH_FILE": str(auth_file)}
    autopilot_env: dict[str, str] = {}
    if not (os.environ.get("REGISTRY_TOKEN") or os.environ.get("REGISTRY_TOKEN_FILE")):
        env["REGISTRY_TOKEN_FILE"] = str(collector_file)
        autopilot_env["REGISTRY_TOKEN_FILE"] = str(autopilot_file)
    return LocalAuth(env, admin, token_file, autopilot_env)
