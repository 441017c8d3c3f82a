"""The one way a service (or `make run`) opens a channel to the registry: plaintext or TLS (optionally with a
client certificate), and the bearer token sent with every call."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from cmlmon_core import tracing
from cmlmon_core.settings import RegistryClientSettings
from cmlmon_core.tls import ClientTls


@dataclass(frozen=True)
class GrpcTarget:
    address: str
    token: str = ""
    tls: ClientTls | None = None

    @classmethod
    def registry(cls, s: RegistryClientSettings) -> GrpcTarget:
        use_tls = s.registry_tls or bool(s.registry_tls_ca_file or s.registry_tls_cert_file)
        tls = ClientTls(s.registry_tls_ca_file, s.registry_tls_cert_file, s.registry_tls_key_file) if use_tls else None
        return cls(s.registry_address, s.registry_token, tls)

    def channel(self) -> grpc.aio.Channel:
        """A channel whose calls are traced when tracing is on (cmlmon_core.tracing)."""
        interceptors = tracing.client_interceptors()
        if self.tls is None:
            return grpc.aio.insecure_channel(self.address, interceptors=interceptors)
        return grpc.aio.secure_channel(self.address, self.tls.channel_credentials(), interceptors=interceptors)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Pass as `metadata=` on every call (also over plaintext, where call credentials are refused)."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()
