"""`python -m cmlmon_dev.compose_secrets [DIR]`: the files docker-compose.yml mounts as secrets, for trying the
secured stack: a CA, TLS certificates for the registry and the notifier (named as compose names them, plus
localhost), the gRPC auth file with an admin token for you, a viewer token for the collectors and an operator
token for the autopilot. The tokens are written to DIR/admin-token (mode 0600), DIR/collector-token and
DIR/autopilot-token; the auth file holds only their hashes. DIR/cml-password (the autopilot's CML controller
password) is made empty once and then left alone: put yours in it.

For the NATS nodes: a server certificate for nats-1..3 (DIR/nats-server.pem, .key) from the same CA, one password
per NATS user of deploy/nats/cmlmon-accounts.conf (DIR/nats-<service>-password, made once and then left alone,
like cml-password) and DIR/nats-accounts.conf, which the nodes' configuration includes: cmlmon-accounts.conf with
those passwords in place of its $CMLMON_<SERVICE>_NATS_PASSWORD variables, written anew from both every time.

The CA comes from trustme, a testing tool: bring your own PKI in production, with the same file names."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

import trustme

from cmlmon_core.auth import Role, token_entry, write_auth_file


def _write(path: Path, data: bytes, mode: int) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


# docker compose (without swarm) mounts a secret file as it is on the host, and the services run as uid 10001:
# what they read must be readable by others; the folder itself is closed to other users of this host.
MOUNTED, YOURS = 0o644, 0o600

# The users of deploy/nats/cmlmon-accounts.conf; each one's password is read from $CMLMON_<SERVICE>_NATS_PASSWORD.
NATS_USERS = ("registry", "collector", "notifier", "autopilot")
NATS_NODES = ("nats-1", "nats-2", "nats-3")
ACCOUNTS = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "cmlmon-accounts.conf"


def nats_passwords(folder: Path) -> dict[str, str]:
    """Each NATS user's password: the one in DIR/nats-<user>-password, made if there is none (never replaced,
    so a running cluster and the services keep agreeing)."""
    passwords = {}
    for user in NATS_USERS:
        path = folder / f"nats-{user}-password"
        if not path.exists():
            _write(path, secrets.token_urlsafe(32).encode() + b"\n", MOUNTED)
        passwords[user] = path.read_text().strip()
        if not passwords[user] or '"' in passwords[user] or "\\" in passwords[user]:
            raise SystemExit(f"{path}: a NATS password must be a non-empty line without quotes or backslashes")
    return passwords


def nats_accounts(passwords: dict[str, str]) -> str:
    """cmlmon-accounts.conf with each user's password written in place of the variable it reads.

    Why not the variables themselves: nats-server resolves them in an included file from its environment only
    (not from variables its including file defines), and compose can fill a container's environment from a
    secret file only through a shell wrapper around the server, which would also show the passwords to
    `docker inspect`. A generated copy of the accounts file, mounted as a secret, keeps the passwords in files."""
    if not ACCOUNTS.is_file():
        raise SystemExit(f"{ACCOUNTS} not found: run this helper from a checkout of the repository")
    text = ACCOUNTS.read_text()
    for user, password in passwords.items():
        variable = f"$CMLMON_{user.upper()}_NATS_PASSWORD"
        if variable not in text:
            raise SystemExit(f"{ACCOUNTS} reads no {variable}")
        text = text.replace(variable, f'"{password}"')
    if "$CMLMON_" in text:
        raise SystemExit(f"{ACCOUNTS} reads a password this helper does not make")
    return (f"# Made by python -m cmlmon_dev.compose_secrets from {ACCOUNTS.name} and the nats-*-password files;"
            " made anew each time it runs.\n" + text)


def make(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca = trustme.CA(organization_name="cmlmon compose")
    (folder / "ca.pem").write_bytes(ca.cert_pem.bytes())
    for service in ("registry", "notifier"):
        cert = ca.issue_cert(service, "localhost", "127.0.0.1")
        (folder / f"{service}.pem").write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
        _write(folder / f"{service}.key", cert.private_key_pem.bytes(), MOUNTED)
    admin, collector, autopilot = (secrets.token_urlsafe(32) for _ in range(3))
    _write(folder / "admin-token", admin.encode() + b"\n", YOURS)
    _write(folder / "collector-token", collector.encode() + b"\n", MOUNTED)
    _write(folder / "autopilot-token", autopilot.encode() + b"\n", MOUNTED)
    nats = ca.issue_cert(*NATS_NODES, "localhost", "127.0.0.1")
    (folder / "nats-server.pem").write_bytes(b"".join(p.bytes() for p in nats.cert_chain_pems))
    _write(folder / "nats-server.key", nats.private_key_pem.bytes(), MOUNTED)
    _write(folder / "nats-accounts.conf", nats_accounts(nats_passwords(folder)).encode(), MOUNTED)
    if not (folder / "cml-password").exists():
        _write(folder / "cml-password", b"", MOUNTED)
    write_auth_file(folder / "grpc-auth.yaml", [token_entry(admin, "admin", Role.ADMIN),
                                                token_entry(collector, "collector", Role.VIEWER),
                                                token_entry(autopilot, "autopilot", Role.OPERATOR)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmlmon_dev.compose_secrets", description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default="secrets", type=Path)
    args = parser.parse_args(argv)
    make(args.folder)
    print(f"written to {args.folder}/; call the registry with "
          f"-cacert {args.folder}/ca.pem -H \"authorization: Bearer $(cat {args.folder}/admin-token)\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
