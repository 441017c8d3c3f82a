"""TLS material from PEM files: gRPC server credentials that follow certificate rotation, gRPC channel
credentials, and the ssl.SSLContext of a NATS connection."""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


class TlsConfigError(Exception):
    """A certificate, key or CA file that cannot be used; names the file, never its content."""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{what} {path}: {exc.strerror}") from None


def _stamp(paths: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((0, 0))
    return tuple(out)


@dataclass(frozen=True)
class ServerTls:
    cert_file: str
    key_file: str
    client_ca_file: str = ""  # set: clients must present a certificate signed by this CA (mTLS)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        pair = (_read(self.key_file, "TLS key"), _read(self.cert_file, "TLS certificate"))
        ca = _read(self.client_ca_file, "client CA") if self.client_ca_file else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials that re-read the files when they change: gRPC asks before every new TLS handshake, so a
        rotated certificate is served to new connections without a restart (open ones keep the old one)."""
        files = (self.cert_file, self.key_file, self.client_ca_file) if self.client_ca_file else (
            self.cert_file, self.key_file)
        state = {"stamp": _stamp(files)}

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            stamp = _stamp(files)
            if stamp == state["stamp"]:
                return None  # unchanged: keep serving the current certificate
            try:
                config = self._configuration()
            except TlsConfigError as exc:  # half-written during a rotation: try again at the next handshake
                log.warning("TLS files changed but cannot be read yet", extra={"error": str(exc)})
                return None
            state["stamp"] = stamp
            log.info("TLS certificate reloaded", extra={"cert_file": self.cert_file})
            return config

        return grpc.dynamic_ssl_server_credentials(self._configuration(), fetch,  # type: ignore[arg-type]
                                                   require_client_authentication=bool(self.client_ca_file))


@dataclass(frozen=True)
class ClientTls:
    ca_file: str = ""  # empty: the system's trust store
    cert_file: str = ""  # client certificate, for servers that require mTLS
    key_file: str = ""

    def channel_credentials(self) -> grpc.ChannelCredentials:
        ca = _read(self.ca_file, "CA") if self.ca_file else None
        if bool(self.cert_file) != bool(self.key_file):
            raise TlsConfigError("a client certificate needs both its certificate and its key file")
        key = _read(self.key_file, "TLS key") if self.key_file else None
        cert = _read(self.cert_file, "TLS certificate") if self.cert_file else None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def ssl_context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file or None)
            if self.cert_file or self.key_file:
                ctx.load_cert_chain(self.cert_file, self.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"TLS files ({self.ca_file or 'system CAs'}, {self.cert_file or 'no client cert'}): "
                                 f"{exc}") from None
        return ctx
