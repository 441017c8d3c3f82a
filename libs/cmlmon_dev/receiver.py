"""A real HTTP server that receives webhooks: `make run` prints what it gets, tests inspect it."""

from __future__ import annotations

import asyncio
import json
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

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """POSTs to any path are recorded (and passed to on_request); answers 200 unless `status` says otherwise."""

    host: str = "127.0.0.1"
    port: int = 0
    status: int = 200
    on_request: Callable[[Received], Awaitable[None] | None] | None = None
    received: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        item = Received(request.path, dict(request.headers), await request.read())
        self.received.append(item)
        if self.on_request is not None:
            result = self.on_request(item)
            if result is not None:
                await result
        async with self._arrived:
            self._arrived.notify_all()
        return web.Response(status=self.status)

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
