"""HTTP health endpoints for a service that has no gRPC server to carry grpc.health.v1 (the collector).

`GET /healthz` answers 200 as long as the event loop answers (a wedged loop fails the liveness probe, which
a thread beside it would not); `GET /readyz` answers 200 when `ready()` is true, else 503. It is served on the
service's own event loop with asyncio streams: two fixed answers need no web framework."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)

_READ_TIMEOUT = 5.0
_MAX_HEADER_LINES = 100


def answer(path: str, ready: Callable[[], bool]) -> tuple[int, str]:
    """Status code and body for a request path (its query string ignored)."""
    route = path.split("?", 1)[0]
    if route == "/healthz":
        return 200, "ok\n"
    if route == "/readyz":
        return (200, "ready\n") if ready() else (503, "not ready\n")
    return 404, "not found\n"


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ready: Callable[[], bool]) -> None:
    try:
        async with asyncio.timeout(_READ_TIMEOUT):
            request = (await reader.readline()).decode("latin-1").split()
            for _ in range(_MAX_HEADER_LINES):  # the headers are not needed; read them so the client is done
                if (await reader.readline()).strip() == b"":
                    break
        if len(request) != 3:
            status, body = 400, "bad request\n"
        elif request[0] not in ("GET", "HEAD"):
            status, body = 405, "method not allowed\n"
        else:
            status, body = answer(request[1], ready)
        payload = body.encode() if request[:1] != ["HEAD"] else b""
        writer.write(f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + payload)
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@asynccontextmanager
async def health_server(host: str, port: int, ready: Callable[[], bool]) -> AsyncIterator[int]:
    """Serve /healthz and /readyz on host:port while inside; yields the bound port. Port 0 serves nothing
    and yields 0."""
    if not port:
        yield 0
        return
    server = await asyncio.start_server(lambda r, w: _handle(r, w, ready), host, port)
    bound = int(server.sockets[0].getsockname()[1])
    log.info("health listening", extra={"port": bound})
    try:
        yield bound
    finally:
        server.close()
        await server.wait_closed()
