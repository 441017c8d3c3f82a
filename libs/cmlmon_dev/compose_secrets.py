"""`python -m cmlmon_dev.compose_secrets [DIR]`: the files docker-compose.yml mounts as secrets, for trying the
secured stack: a CA, TLS certificates for the registry and the notifier (named as compose names them, plus
localhost), the gRPC auth file with an admin token for you, a viewer token for the collectors and an operator
token for the autopilot. The tokens are written to DIR/admin-token (mode 0600), DIR/collector-token and
DIR/autopilot-token; the auth file holds only their hashes. DIR/cml-password (the autopilot's CML controller
password) is made empty once and then left alone: put yours in it.

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
