"""A small stand-in for a CML controller's REST API (/api/v0), answering the calls the autopilot makes with the
response shapes of the real API as virl2-client reads them: POST authenticate (a JSON string token), GET
system_information ({"version", "ready"}), system_health ({"valid", "is_licensed", "computes", ...}),
licensing ({"registration": {"status"}, "authorization": {"status"}, ...}), labs (a list of lab ids) and
labs/{id}/nodes?data=true&operational=true (a list of node dicts with "state": DEFINED_ON_CORE, STOPPED,
QUEUED, STARTED or BOOTED), and DELETE licensing/deregistration (204). Tests change its state directly
(start a node, make it unhealthy, hang) and read the calls it got."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from cmlmon_dev.servers import free_port

ACTIVE_NODE_STATES = ("STARTED", "QUEUED", "BOOTED")


@dataclass
class CmlController:
    username: str = "admin"
    password: str = "cml-password"
    version: str = "2.8.1+build.9"
    healthy: bool = True
    registration: str = "COMPLETED"  # NOT_REGISTERED, COMPLETED, ...
    authorization: str = "IN_COMPLIANCE"  # IN_COMPLIANCE, OUT_OF_COMPLIANCE, EVAL, ...
    labs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # lab id -> its nodes
    hang: asyncio.Event | None = None  # while set up (and not set), every call waits for it
    host: str = "127.0.0.1"
    port: int = 0
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every call
    _tokens: set[str] = field(default_factory=set)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add_lab(self, *node_states: str) -> str:
        lab_id = str(uuid.uuid4())
        self.labs[lab_id] = [{"id": str(uuid.uuid4()), "label": f"n{i}", "node_definition": "iosv",
                              "state": state, "lab_id": lab_id} for i, state in enumerate(node_states)]
        return lab_id

    def set_nodes(self, lab_id: str, state: str) -> None:
        for node in self.labs[lab_id]:
            node["state"] = state

    def running_nodes(self) -> int:
        return sum(n["state"] in ACTIVE_NODE_STATES for nodes in self.labs.values() for n in nodes)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append((request.method, request.path))
        if self.hang is not None:
            await self.hang.wait()
        if request.path != "/api/v0/authenticate":
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer ") or header[7:] not in self._tokens:
                return web.json_response({"description": "No authorization token provided.", "code": 401},
                                         status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def _authenticate(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("username") != self.username or body.get("password") != self.password:
            return web.json_response({"description": "Authentication failed!", "code": 403}, status=403)
        token = secrets.token_urlsafe(24)
        self._tokens.add(token)
        return web.json_response(token)

    async def _system_information(self, _: web.Request) -> web.Response:
        return web.json_response({"version": self.version, "ready": True, "allow_ssh_pubkey_auth": False,
                                  "oui": "52:54:00:00:00:00"})

    async def _system_health(self, _: web.Request) -> web.Response:
        compute = {"kvm_vmx_enabled": True, "enough_cpus": True, "refplat_images_available": True,
                   "lld_connected": self.healthy, "valid": self.healthy, "is_controller": True,
                   "hostname": "cml-controller"}
        return web.json_response({"valid": self.healthy, "is_licensed": self.authorization == "IN_COMPLIANCE",
                                  "is_enterprise": False, "computes": {str(uuid.UUID(int=1)): compute},
                                  "controller": {"core_connected": True, "nodes_loaded": True,
                                                 "images_loaded": True}})

    async def _licensing(self, _: web.Request) -> web.Response:
        return web.json_response({
            "registration": {"status": self.registration, "smart_account": "cmlmon", "virtual_account": "dev",
                             "expires": "2027-06-01 00:00:00", "register_time": {"succeeded": None}},
            "authorization": {"status": self.authorization, "expires": "2027-03-01 00:00:00"},
            "reservation_mode": False, "features": [], "transport": {"ssms": "https://smartreceiver.cisco.com"},
            "udi": {"pid": "CML", "sn": "ABC123"}, "product_license": {"active": "CML_Enterprise"}})

    async def _deregister(self, _: web.Request) -> web.Response:
        if self.running_nodes():
            return web.json_response({"description": "Cannot deregister while nodes are running", "code": 400},
                                     status=400)
        self.registration = "NOT_REGISTERED"
        return web.Response(status=204)

    async def _labs(self, _: web.Request) -> web.Response:
        return web.json_response(list(self.labs))

    async def _nodes(self, request: web.Request) -> web.Response:
        nodes = self.labs.get(request.match_info["lab_id"])
        if nodes is None:
            return web.json_response({"description": "Lab not found", "code": 404}, status=404)
        if request.query.get("data") != "true":
            return web.json_response([n["id"] for n in nodes])
        return web.json_response(nodes)

    async def start(self) -> CmlController:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/api/v0/authenticate", self._authenticate)
        app.router.add_get("/api/v0/system_information", self._system_information)
        app.router.add_get("/api/v0/system_health", self._system_health)
        app.router.add_get("/api/v0/licensing", self._licensing)
        app.router.add_delete("/api/v0/licensing/deregistration", self._deregister)
        app.router.add_get("/api/v0/labs", self._labs)
        app.router.add_get("/api/v0/labs/{lab_id}/nodes", self._nodes)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        if self.port == 0:
            self.port = free_port()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def stop(self) -> None:
        if self.hang is not None:
            self.hang.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> CmlController:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
