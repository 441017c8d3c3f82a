"""The NATS connection every service opens: reconnects forever, logs its state changes, drains on close.

Security comes from the settings, through nats-py's own connect options: TLS (CA, optional client
certificate), user/password, token, NKey seed file or .creds file. A server that refuses the credentials or
the TLS handshake at start-up ends the start at once (StartupError naming the server and the reason, never a
secret) instead of being retried forever like an unreachable server is."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from nats.aio.client import Client

from cmlmon_core.lifecycle import StartupError
from cmlmon_core.settings import CommonSettings
from cmlmon_core.tls import ClientTls, TlsConfigError

log = logging.getLogger(__name__)

# What nats-server answers when it refuses a client's credentials or requires something it did not get.
_REFUSALS = ("authorization violation", "authentication", "user authentication expired", "tls required",
             "secure connection")


def without_userinfo(url: str) -> str:
    """A server URL as it may be logged: no user, password or token in it."""
    parts = urlsplit(url)
    if not parts.hostname:
        return url
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def security_options(settings: CommonSettings) -> dict[str, Any]:
    """nats.connect keyword arguments for TLS and authentication."""
    s = settings
    opts: dict[str, Any] = {}
    if s.nats_tls_ca_file or s.nats_tls_cert_file:
        try:
            opts["tls"] = ClientTls(s.nats_tls_ca_file, s.nats_tls_cert_file, s.nats_tls_key_file).ssl_context()
        except TlsConfigError as exc:
            raise StartupError(f"NATS_TLS_*: {exc}") from None
    if s.nats_user:
        opts["user"] = s.nats_user
        opts["password"] = s.nats_password
    if s.nats_token:
        opts["token"] = s.nats_token
    if s.nats_creds_file:
        opts["user_credentials"] = s.nats_creds_file
    if s.nats_nkey_seed_file:
        opts["nkeys_seed"] = s.nats_nkey_seed_file
    if s.nats_inbox_prefix != "_INBOX":
        opts["inbox_prefix"] = s.nats_inbox_prefix
    return opts


def _refusal(exc: BaseException) -> str | None:
    """The reason, when exc says the server refused this client (as opposed to being unreachable)."""
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {getattr(exc, 'reason', None) or type(exc).__name__}"
    text = str(exc).lower()
    return str(exc).strip() if any(r in text for r in _REFUSALS) else None


@asynccontextmanager
async def connect(settings: CommonSettings, name: str) -> AsyncIterator[Client]:
    """Connect to NATS; on exit drain (finish in-flight handlers, flush publishes) and close."""
    refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    servers = ", ".join(without_userinfo(u) for u in settings.nats_servers)

    async def on_error(exc: Exception) -> None:
        reason = _refusal(exc)
        if reason and not refused.done():
            refused.set_result(reason)
        log.warning("nats error", extra={"error": reason or repr(exc)})

    async def on_disconnect() -> None:
        log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    nc = Client()
    connecting = asyncio.create_task(nc.connect(
        servers=settings.nats_servers,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        **security_options(settings),
    ))
    waiting: list[asyncio.Future[Any]] = [connecting, refused]
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not connecting.done():  # refused, or the start abandoned (stop requested): no retry left behind
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
            with contextlib.suppress(Exception):
                await nc.close()
    if connecting.cancelled():  # only by the finally above, on a refusal
        raise StartupError(f"NATS at {servers} refused {name}: {refused.result()}")
    connecting.result()
    try:
        yield nc
    finally:
        if not nc.is_closed:
            try:
                await nc.drain()
            except Exception as exc:  # closing anyway; a failed drain must not hide the original error
                log.warning("nats drain failed", extra={"error": repr(exc)})
                await nc.close()
