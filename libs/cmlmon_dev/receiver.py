"""The one webhook receiver of the project: a real HTTP server that `make run` prints alerts with, and that the
tests and benchmarks inspect. It can answer scripted failures, verify Standard Webhooks signatures, and hang
on purpose."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from cmlmon_dev.servers import free_port


@dataclass(slots=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""  # the raw query string, without "?"

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """POSTs to any path are recorded in `received` (and passed to on_request) and answered 200.

    `responses` scripts the status codes (and headers) of the first calls, recorded in `rejected` (with
    `scripted_for`, of the first calls whose path or body names it: a test's own worker, when a shared stream
    brings other tests' alerts to the same sink); with a
    `secret`, a request whose Standard Webhooks signature does not verify is rejected with 401; while `gate`
    is set up, every request waits for it (a receiver that hangs; `waiting` counts them)."""

    host: str = "127.0.0.1"
    port: int = 0
    path: str = ""  # appended to `url`, for senders that need one (the address of a hook with a token in it)
    responses: list[int | tuple[int, dict[str, str]]] = field(default_factory=list)
    scripted_for: str = ""
    secret: str = ""
    gate: asyncio.Event | None = None
    on_request: Callable[[Received], Awaitable[None] | None] | None = None
    received: list[Received] = field(default_factory=list)
    rejected: list[Received] = field(default_factory=list)
    waiting: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def for_worker(self, worker_id: str) -> list[Received]:
        """The accepted requests whose body mentions worker_id."""
        return [r for r in self.received if worker_id in r.body.decode(errors="replace")]

    async def _handle(self, request: web.Request) -> web.Response:
        item = Received(request.path, dict(request.headers), await request.read(), request.query_string)
        if self.gate is not None:
            self.waiting += 1
            await self.gate.wait()
            self.waiting -= 1
        if self.responses and (not self.scripted_for or self.scripted_for in item.path
                               or self.scripted_for in item.body.decode(errors="replace")):
            scripted = self.responses.pop(0)
            status, headers = scripted if isinstance(scripted, tuple) else (scripted, {})
            self.rejected.append(item)
            return web.Response(status=status, headers=headers)
        if self.secret and not verify_signature(self.secret, item.headers, item.body):
            self.rejected.append(item)
            return web.Response(status=401)
        self.received.append(item)
        if self.on_request is not None:
            result = self.on_request(item)
            if result is not None:
                await result
        async with self._arrived:
            self._arrived.notify_all()
        return web.Response(status=200)

    async def wait_for(self, predicate: Callable[[Received], bool], timeout: float) -> Received:
        """The first received request matching predicate, waiting up to timeout seconds."""
        async def match() -> Received:
            async with self._arrived:
                while True:
                    for item in self.received:
                        if predicate(item):
                            return item
                    await self._arrived.wait()
        return await asyncio.wait_for(match(), timeout)

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        if self.port == 0:
            self.port = free_port()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> WebhookReceiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def verify_signature(secret: str, headers: dict[str, str], body: bytes, tolerance: float = 300) -> bool:
    """Standard Webhooks verification, written from the spec independently of the notifier's code."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = lower.get("webhook-id"), lower.get("webhook-timestamp"), lower.get("webhook-signature")
    if not (msg_id and ts and sigs) or abs(time.time() - int(ts)) > tolerance:
        return False
    key = base64.b64decode(secret[len("whsec_"):])
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    return any(part.split(",", 1)[-1] == expected for part in sigs.split(" ") if part.startswith("v1,"))
