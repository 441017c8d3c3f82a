"""The one way a service serves gRPC: its servicers, the standard health service, server reflection,
authentication (cmlmon_core.auth), per-method metrics (cmlmon_core.grpc_metrics), a caller's trace context
carried on (cmlmon_core.tracing) and, when configured, TLS (mTLS with a client CA).

Secure by default: with no GRPC_AUTH_FILE the service refuses to start unless GRPC_AUTH=none says that an
open API is wanted (and then every start logs a warning)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from cmlmon_core import tracing
from cmlmon_core.auth import Admission, AuthFileError, PolicyFile, Role, open_access
from cmlmon_core.grpc_metrics import counted
from cmlmon_core.reflection import served_pool
from cmlmon_core.settings import GrpcServerSettings
from cmlmon_core.tls import ServerTls, TlsConfigError

log = logging.getLogger(__name__)


class GrpcConfigError(Exception):
    """The gRPC security settings cannot be used; the message names the variable."""


@dataclass(frozen=True)
class ServedService:
    """A service to serve: its full name, how to add its servicer, and the role each method needs (a method
    not listed needs admin)."""

    name: str
    add: Callable[[grpc.aio.Server], None]
    roles: Mapping[str, Role]


Wrap = Callable[[str, Any], Any]  # (full method name, its handler) -> the handler to serve


class Wrapping:
    """A server as the generated add_*_to_server functions see it: each method's handler is wrapped once, as
    it is added or first found, with what every call needs (metrics, trace context, admission), rather than by
    server interceptors, which grpc.aio runs as a chain of coroutines on every call.

    With registered=False the methods are taken as generic ones only: grpc.aio keeps one pending request per
    registered method and waits on all of them for every call it accepts, so each registered method costs every
    call about 5,000 instructions (callgrind: 518k per call with one method registered, 593k with fifteen). A
    service registers only the methods called all the time (the registry: GetWorker, ListWorkers); the rest,
    health and reflection included, are found by name at about the same cost as before registration existed."""

    def __init__(self, server: grpc.aio.Server, wrap: Wrap, *, registered: bool = True) -> None:
        self._server = server
        self._wrap = wrap
        self._registered = registered

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]) -> None:
        self._server.add_generic_rpc_handlers([_Wrapped(handler, self._wrap) for handler in handlers])

    def add_registered_method_handlers(self, name: str, handlers: Mapping[str, Any]) -> None:
        if self._registered:
            wrapped = {method: self._wrap(f"/{name}/{method}", handler) for method, handler in handlers.items()}
            self._server.add_registered_method_handlers(name, wrapped)  # type: ignore[attr-defined]


class _Wrapped(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A generic handler whose method handlers are wrapped, each once."""

    def __init__(self, inner: grpc.GenericRpcHandler[Any, Any], wrap: Wrap) -> None:
        self._inner = inner
        self._wrap = wrap
        self._wrapped: dict[str, tuple[Any, Any]] = {}  # method -> (its handler, that handler wrapped)

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        handler = self._inner.service(details)
        if handler is None:  # not this service's: the next handler, or gRPC's UNIMPLEMENTED
            return None
        known = self._wrapped.get(details.method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(details.method, handler)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped


@dataclass(frozen=True)
class GrpcSecurity:
    policy: PolicyFile | None  # None: GRPC_AUTH=none
    tls: ServerTls | None

    @property
    def summary(self) -> str:
        auth = "no authentication" if self.policy is None else "bearer tokens"
        if self.tls is None:
            return f"{auth}, plaintext"
        return f"{auth}, TLS" + (" with client certificates" if self.tls.client_ca_file else "")


def grpc_security(settings: GrpcServerSettings) -> GrpcSecurity:
    """Read the auth file and check the TLS files now, so that a mistake stops the start."""
    s = settings
    tls = None
    if s.grpc_tls_cert_file or s.grpc_tls_key_file or s.grpc_tls_client_ca_file:
        if not (s.grpc_tls_cert_file and s.grpc_tls_key_file):
            raise GrpcConfigError("GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE are needed together "
                                  "(GRPC_TLS_CLIENT_CA_FILE only with them)")
        tls = ServerTls(s.grpc_tls_cert_file, s.grpc_tls_key_file, s.grpc_tls_client_ca_file)
        try:
            tls.credentials()
        except TlsConfigError as exc:
            raise GrpcConfigError(f"GRPC_TLS_*: {exc}") from None
        except RuntimeError as exc:  # gRPC refuses a key that does not match its certificate, bad PEM
            raise GrpcConfigError(f"GRPC_TLS_*: unusable certificate or key: {exc}") from None
    if s.grpc_auth == "none":
        return GrpcSecurity(None, tls)
    if not s.grpc_auth_file:
        raise GrpcConfigError("gRPC authentication is not configured: set GRPC_AUTH_FILE (hashed bearer tokens "
                              "and/or client certificate subjects, each with a role) or GRPC_AUTH=none to serve "
                              "the API to anyone who reaches the port")
    try:
        policy = PolicyFile(s.grpc_auth_file)
    except AuthFileError as exc:
        raise GrpcConfigError(f"GRPC_AUTH_FILE: {exc}") from None
    if policy.current().empty:
        raise GrpcConfigError(f"GRPC_AUTH_FILE: {s.grpc_auth_file} has no tokens and no certificates")
    if policy.current().certificates and not s.grpc_tls_client_ca_file:
        log.warning("GRPC_AUTH_FILE maps certificates but GRPC_TLS_CLIENT_CA_FILE is not set: "
                    "no client certificate is asked for")
    return GrpcSecurity(policy, tls)


def grpc_security_or_exit(settings: GrpcServerSettings) -> GrpcSecurity:
    try:
        return grpc_security(settings)
    except GrpcConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    port: int
    health: HealthServicer
    probe: grpc.aio.Server | None = None  # the plaintext health-only server, when asked for

    async def stop(self, grace: float) -> None:
        """Health says NOT_SERVING first (probes stop sending), then calls get grace seconds to finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.probe is not None:
            await self.probe.stop(0)


async def start_grpc_server(services: Sequence[ServedService], host: str, port: int, security: GrpcSecurity,
                            *, health_port: int = 0) -> GrpcServer:
    """Serve the services with health and reflection; every one of them reported SERVING. With health_port,
    the same health service also alone in plaintext on that port (nothing else is reachable there)."""
    if security.policy is None:
        log.warning("GRPC_AUTH=none: the gRPC API serves anyone who reaches the port, without authentication")
        admit: Wrap = open_access
    else:
        required = {f"/{svc.name}/{method}": role for svc in services for method, role in svc.roles.items()}
        admit = Admission(security.policy.current, required).guard

    traced = tracing.enabled()  # decided once: generic methods are wrapped at their first call

    def wrap(method: str, handler: Any) -> Any:
        # Metrics outside admission, so that refused calls are counted too; when tracing, OpenTelemetry's
        # interceptor (the only one) opens the call's span around all of it, so refused calls are traced as well.
        admitted = admit(method, handler)
        return counted(method, admitted if traced else tracing.carrying(method, admitted))

    # No SO_REUSEPORT: a second server on a taken port must fail to start, not silently share it.
    server = grpc.aio.server(interceptors=tracing.server_interceptors() if traced else None,
                             options=[("grpc.so_reuseport", 0)])
    for svc in services:
        svc.add(Wrapping(server, wrap))  # type: ignore[arg-type]
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, Wrapping(server, wrap, registered=False))
    names = [svc.name for svc in services]
    shown = (*names, health.SERVICE_NAME, reflection.SERVICE_NAME)
    # What reflection.enable_server_reflection does for an aio server, without registering its method; the pool
    # holds the APIs only, no internals. (reflection.aio is public, in an import mypy does not follow.)
    servicer = reflection.aio.ReflectionServicer(shown, pool=served_pool(shown))  # type: ignore[attr-defined]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, Wrapping(server, wrap, registered=False))
    address = f"{host}:{port}"
    if security.tls is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, security.tls.credentials())
    await server.start()
    probe = None
    if health_port:
        probe = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, probe)
        probe.add_insecure_port(f"{host}:{health_port}")
        await probe.start()
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC serving", extra={"port": bound, "security": security.summary, "health_port": health_port})
    return GrpcServer(server, bound, health_servicer, probe)
