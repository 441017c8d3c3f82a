"""Who is calling a gRPC API, and may they call this method.

An identity comes from a bearer token (`authorization: Bearer <token>` metadata) found in the auth file, or,
when the server requires client certificates (mTLS), from the verified certificate's subject (its CN or one
of its SANs) mapped to a role by the same file. Roles are ordered: viewer < operator < admin; each service
states which role each of its methods needs. Health and reflection stay open (probes, grpcurl discovery).

The auth file (GRPC_AUTH_FILE), YAML; tokens are stored only as their SHA-256, so the file is no secret:

    tokens:
      - sha256: 9f2c...            # python -m cmlmon_core.auth hash-token --principal alice --role admin
        principal: alice
        role: admin
    certificates:                  # mTLS client certificate subject -> role
      collector: viewer

The file is re-read when it changes (checked at most once a second), so tokens are added and revoked without
a restart; a file that no longer parses is logged and the last good one kept."""

from __future__ import annotations

import argparse
import enum
import hashlib
import hmac
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from cmlmon_core.grpc_handlers import rewrap

log = logging.getLogger(__name__)

OPEN_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                           "grpc.reflection.v1.ServerReflection"})
ANONYMOUS = "anonymous"  # the principal of every call when GRPC_AUTH=none


class Role(enum.IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: object) -> Role:
        if not isinstance(text, str) or text.upper() not in cls.__members__:
            raise ValueError(f"unknown role {text!r} (viewer, operator, admin)")
        return cls[text.upper()]


@dataclass(frozen=True, slots=True)
class Identity:
    principal: str
    role: Role


class AuthFileError(Exception):
    """The auth file cannot be read or parsed; the message says where, never a token."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AuthPolicy:
    tokens: tuple[tuple[bytes, Identity], ...] = ()  # SHA-256 digest of a token, who it is
    certificates: Mapping[str, Role] = field(default_factory=dict)  # certificate subject -> role

    @classmethod
    def parse(cls, text: str, source: str) -> AuthPolicy:
        try:
            doc = yaml.safe_load(text) or {}
            if not isinstance(doc, dict):
                raise ValueError("expected a mapping with 'tokens' and/or 'certificates'")
            tokens = []
            for i, entry in enumerate(doc.get("tokens") or []):
                digest = bytes.fromhex(str(entry["sha256"]))
                if len(digest) != 32:
                    raise ValueError(f"tokens[{i}].sha256 is not a SHA-256 hex digest")
                tokens.append((digest, Identity(str(entry["principal"]), Role.parse(entry["role"]))))
            certificates = {str(k): Role.parse(v) for k, v in (doc.get("certificates") or {}).items()}
        except (yaml.YAMLError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise AuthFileError(f"{source}: {type(exc).__name__}: {exc}") from None
        return cls(tuple(tokens), certificates)

    @classmethod
    def load(cls, path: str | Path) -> AuthPolicy:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise AuthFileError(f"cannot read {path}: {exc.strerror}") from None
        return cls.parse(text, str(path))

    @property
    def empty(self) -> bool:
        return not self.tokens and not self.certificates

    def by_token(self, token: str) -> Identity | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for known, identity in self.tokens:  # every entry compared, in constant time each: no early exit
            if hmac.compare_digest(known, digest):
                found = identity
        return found

    def by_certificate(self, subjects: Sequence[str]) -> Identity | None:
        for subject in subjects:
            role = self.certificates.get(subject)
            if role is not None:
                return Identity(subject, role)
        return None


class PolicyFile:
    """The auth file, re-read when its modification time or size changes."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = Path(path)
        self._clock = clock
        self._stamp = self._stat()
        self._policy = AuthPolicy.load(self._path)
        self._checked = clock()

    def _stat(self) -> tuple[int, int]:
        try:
            st = os.stat(self._path)
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def current(self) -> AuthPolicy:
        now = self._clock()
        if now - self._checked >= 1.0:
            self._checked = now
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._policy = AuthPolicy.load(self._path)
                    log.info("auth file reloaded", extra={"path": str(self._path)})
                except AuthFileError as exc:
                    log.error("auth file not reloaded, the previous one stays in force", extra={"error": str(exc)})
        return self._policy


_principal: ContextVar[str] = ContextVar("cmlmon_principal", default="")


def current_principal() -> str:
    """The principal of the gRPC call being handled ("anonymous" when auth is off, "" outside a call)."""
    return _principal.get()


def _bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def _certificate_subjects(context: grpc.aio.ServicerContext[Any, Any]) -> list[str]:
    auth = context.auth_context()
    if not auth.get("x509_pem_cert"):  # only present once the certificate was verified against the client CA
        return []
    names = [*auth.get("x509_common_name", []), *auth.get("x509_subject_alternative_name", [])]
    return [n.decode(errors="replace") for n in names if n]


class Unauthenticated(Exception):
    pass


class Admission:
    """Admits a call to a protected method only with a known identity whose role is high enough.

    The check runs inside the method's handler (it needs the peer's certificate, which only the servicer
    context shows); the principal is then available to the servicer through current_principal()."""

    def __init__(self, policy: Callable[[], AuthPolicy], required: Mapping[str, Role]) -> None:
        self._policy = policy
        self._required = required  # "/package.Service/Method" -> role; a method not listed needs admin

    def guard(self, full_method: str, handler: Any) -> Any:
        """The method's handler, admitting each call first (health and reflection stay open)."""
        if full_method.split("/")[1] in OPEN_SERVICES:
            return handler
        return rewrap(handler, self._admission(full_method))

    def _admission(self, method: str) -> Admit:
        needed = self._required.get(method, Role.ADMIN)
        short = method.rsplit("/", 1)[-1]

        async def admit(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            try:
                identity = self.identify(context.invocation_metadata(), context)
            except Unauthenticated as exc:
                log.warning("call refused", extra={"method": short, "peer": context.peer(), "reason": str(exc)})
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            if identity.role < needed:
                log.warning("call refused", extra={"principal": identity.principal, "method": short,
                                                   "role": identity.role.label, "needed": needed.label})
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"{short} needs role {needed.label}; {identity.principal} has "
                                    f"{identity.role.label}")
            _principal.set(identity.principal)

        return admit

    def identify(self, metadata: Iterable[tuple[str, Any]] | None, context: grpc.aio.ServicerContext[Any, Any]
                 ) -> Identity:
        """The caller: its bearer token when it sends one, else its verified client certificate.

        A token wins over a certificate sent with it: with mTLS every client has a certificate, which names
        the machine or the proxy the call comes through (a CLI host, a gateway), while the token names who
        calls through it, the narrower identity. An unknown token is refused even when the certificate is
        mapped: a credential the caller chose to send must not be passed over for another one (a revoked
        token keeps failing). The token grants no more than it would over any other verified connection."""
        policy = self._policy()
        token = _bearer(metadata)
        if token is not None:
            identity = policy.by_token(token) if token else None
            if identity is None:
                raise Unauthenticated("unknown bearer token")
            return identity
        subjects = _certificate_subjects(context)
        if subjects:
            identity = policy.by_certificate(subjects)
            if identity is None:
                raise Unauthenticated(f"client certificate {subjects[0]!r} is not mapped to a role")
            return identity
        raise Unauthenticated("no credentials: send 'authorization: Bearer <token>' metadata or a client certificate")


Admit = Callable[[grpc.aio.ServicerContext[Any, Any]], Any]


async def _anonymous(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    _principal.set(ANONYMOUS)  # runs in the call's task, before its handler


def open_access(full_method: str, handler: Any) -> Any:
    """GRPC_AUTH=none: the method's handler, every call admitted as "anonymous"."""
    return rewrap(handler, _anonymous)


# --- making entries -------------------------------------------------------------------------------------------

def token_entry(token: str, principal: str, role: Role) -> dict[str, str]:
    return {"sha256": hash_token(token), "principal": principal, "role": role.label}


def write_auth_file(path: Path, entries: Sequence[dict[str, str]], certificates: Mapping[str, Role] | None = None
                    ) -> None:
    doc: dict[str, Any] = {"tokens": list(entries)}
    if certificates:
        doc["certificates"] = {k: v.label for k, v in certificates.items()}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmlmon_core.auth", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    hashing = sub.add_parser("hash-token", help="print the auth file entry of a token read from stdin "
                                                "(or of a new one, printed to stderr, with --new)")
    hashing.add_argument("--principal", required=True)
    hashing.add_argument("--role", required=True, choices=[r.label for r in Role])
    hashing.add_argument("--new", action="store_true", help="generate the token")
    args = parser.parse_args(argv)
    if args.new:
        token = secrets.token_urlsafe(32)
        print(f"token: {token}", file=sys.stderr)
    else:
        token = sys.stdin.readline().strip()
        if not token:
            parser.error("no token on stdin")
    entry = token_entry(token, args.principal, Role.parse(args.role))
    sys.stdout.write(yaml.safe_dump({"tokens": [entry]}, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
