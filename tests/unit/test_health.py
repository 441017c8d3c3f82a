"""The HTTP probe server on a real loopback socket: what each request gets, and readiness read at request time."""

from __future__ import annotations

import asyncio

import pytest

from cmlmon_core.health import health_server
from cmlmon_dev.servers import free_port


async def request(port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize(("raw", "status", "body"), [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, b"ok\n"),
    (b"GET /healthz?verbose HTTP/1.1\r\n\r\n", 200, b"ok\n"),
    (b"HEAD /healthz HTTP/1.1\r\n\r\n", 200, b""),
    (b"GET /metrics HTTP/1.1\r\n\r\n", 404, b"not found\n"),
    (b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, b"method not allowed\n"),
    (b"nonsense\r\n\r\n", 400, b"bad request\n"),
])
async def test_requests_get_their_answer(raw: bytes, status: int, body: bytes) -> None:
    async with health_server("127.0.0.1", free_port(), lambda: True) as port:
        assert await request(port, raw) == (status, body)


async def test_readyz_follows_readiness_at_each_request() -> None:
    ready = False
    async with health_server("127.0.0.1", free_port(), lambda: ready) as port:
        assert await request(port, b"GET /readyz HTTP/1.1\r\n\r\n") == (503, b"not ready\n")
        ready = True
        assert await request(port, b"GET /readyz HTTP/1.1\r\n\r\n") == (200, b"ready\n")
        assert await request(port, b"GET /healthz HTTP/1.1\r\n\r\n") == (200, b"ok\n")


async def test_a_silent_client_does_not_block_the_next() -> None:
    async with health_server("127.0.0.1", free_port(), lambda: True) as port:
        _, idle = await asyncio.open_connection("127.0.0.1", port)  # connects, says nothing
        assert await request(port, b"GET /healthz HTTP/1.1\r\n\r\n") == (200, b"ok\n")
        idle.close()


async def test_port_zero_serves_nothing() -> None:
    async with health_server("127.0.0.1", 0, lambda: True) as port:
        assert port == 0
