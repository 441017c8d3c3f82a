"""A recording proxy in front of an AWS endpoint (moto's server in tests): every request is passed on unchanged
and its query-protocol Action (and instance ids) recorded, so a test can say which AWS calls a service made and
which it did not — for instance, that a dry-run made no state-changing call. Only the services pointed at the
proxy are counted, not the others sharing the same moto server."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import httpx
from aiohttp import web

from cmlmon_dev.servers import free_port

_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass(frozen=True, slots=True)
class AwsCall:
    action: str  # e.g. "RebootInstances"
    instance_ids: tuple[str, ...]  # InstanceId.N of the request


@dataclass
class CountingAwsProxy:
    upstream: str
    host: str = "127.0.0.1"
    port: int = 0
    calls: list[AwsCall] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def made(self, action: str, instance_id: str | None = None) -> int:
        """How many calls of action (about instance_id, when given) went through."""
        return sum(c.action == action and (instance_id is None or instance_id in c.instance_ids)
                   for c in self.calls)

    def about(self, instance_id: str) -> list[str]:
        """The actions of every call naming instance_id, in order."""
        return [c.action for c in self.calls if instance_id in c.instance_ids]

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._client is not None
        body = await request.read()
        form = parse_qsl(body.decode(errors="replace")) + list(request.query.items())
        action = next((v for k, v in form if k == "Action"), request.headers.get("X-Amz-Target", ""))
        ids = tuple(v for k, v in form if k.startswith("InstanceId"))
        self.calls.append(AwsCall(action, ids))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        reply = await self._client.request(request.method, request.path_qs, content=body, headers=headers)
        passed = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP_BY_HOP | {"content-encoding"}}
        return web.Response(status=reply.status_code, body=reply.content, headers=passed)

    async def __aenter__(self) -> CountingAwsProxy:
        self._client = httpx.AsyncClient(base_url=self.upstream, timeout=30)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = self.port or free_port()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.aclose()
