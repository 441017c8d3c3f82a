"""CML controller probe over its REST API (/api/v0) with httpx: the autopilot reads controllers with it, the
registry removes a controller's licence registration with it before terminating the instance.

Why httpx and not virl2-client: virl2-client is synchronous (every call would need a thread), builds the
whole lab model (topology, links, interfaces) when it only needs counts, checks its own version against the
controller's at connect, and opens one session per controller. The autopilot probes many controllers
concurrently from one event loop, with one bound on time per controller, so it calls the same endpoints
virl2-client calls (authenticate, system_information, system_health, licensing, labs,
labs/{id}/nodes?data=true&operational=true, licensing/deregistration) through one shared httpx.AsyncClient.

A controller that does not answer is reported as unreachable (`Controller.reachable` False), never as zero
labs."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

log = logging.getLogger(__name__)

class ControllerUnreachable(Exception):
    """The CML controller did not answer (connection, TLS, timeout), refused our credentials or the request."""


ACTIVE_NODE_STATES = frozenset({"STARTED", "QUEUED", "BOOTED"})  # virl2-client's Node.is_active
REGISTERED = "COMPLETED"
IN_COMPLIANCE = "IN_COMPLIANCE"


@dataclass(frozen=True, slots=True)
class Controller:
    """What one probe of a CML controller found."""

    url: str
    reachable: bool
    error: str = ""
    version: str = ""
    healthy: bool | None = None
    registration: str = ""  # licensing registration status, e.g. COMPLETED, NOT_REGISTERED
    authorization: str = ""  # licensing authorization status, e.g. IN_COMPLIANCE, OUT_OF_COMPLIANCE
    labs: int | None = None
    running_nodes: int | None = None

    @property
    def licence_registered(self) -> bool:
        return self.registration == REGISTERED

    @property
    def in_compliance(self) -> bool | None:
        return None if not self.authorization else self.authorization == IN_COMPLIANCE


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str


class ControllerProbe(Protocol):
    async def probe(self, url: str) -> Controller: ...


class HttpCmlProbe:
    """Probes controllers through one shared client: at most `concurrency` at once, `timeout` seconds each."""

    def __init__(self, http: httpx.AsyncClient, credentials: Credentials, *, timeout: float = 20.0,
                 concurrency: int = 8) -> None:
        self._http = http
        self._credentials = credentials
        self._timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._tokens: dict[str, str] = {}

    async def probe(self, url: str) -> Controller:
        base = url.rstrip("/")
        async with self._slots:
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._read(base)
            except TimeoutError:
                return Controller(base, reachable=False, error=f"no answer within {self._timeout:.0f} s")
            except ControllerUnreachable as exc:
                return Controller(base, reachable=False, error=str(exc))

    async def _read(self, base: str) -> Controller:
        info = await self._get(base, "system_information")
        health = await self._get(base, "system_health")
        licensing = await self._get(base, "licensing")
        lab_ids = await self._get(base, "labs", params={"show_all": "true"})
        running = 0
        for lab_id in lab_ids:
            nodes = await self._get(base, f"labs/{lab_id}/nodes", params={"data": "true", "operational": "true"})
            running += sum(1 for node in nodes if _node_state(node) in ACTIVE_NODE_STATES)
        return Controller(
            base, reachable=True, version=str(info.get("version", "")), healthy=bool(health.get("valid")),
            registration=str((licensing.get("registration") or {}).get("status", "")),
            authorization=str((licensing.get("authorization") or {}).get("status", "")),
            labs=len(lab_ids), running_nodes=running)

    async def deregister_licence(self, url: str) -> None:
        """Remove the controller's Smart Licensing registration; raise ControllerUnreachable when refused."""
        base = url.rstrip("/")
        async with self._slots, asyncio.timeout(self._timeout):
            response = await self._call(base, "DELETE", "licensing/deregistration")
        if response.status_code not in (200, 202, 204):
            raise ControllerUnreachable(f"deregistration refused: HTTP {response.status_code} {_why(response)}")

    async def _get(self, base: str, path: str, params: dict[str, str] | None = None) -> Any:
        response = await self._call(base, "GET", path, params)
        if response.status_code != 200:
            raise ControllerUnreachable(f"GET {path}: HTTP {response.status_code} {_why(response)}")
        try:
            return response.json()
        except ValueError as exc:
            raise ControllerUnreachable(f"GET {path}: not JSON") from exc

    async def _call(self, base: str, method: str, path: str, params: dict[str, str] | None = None
                    ) -> httpx.Response:
        for attempt in (1, 2):  # a token the controller no longer knows (it restarted) is renewed once
            token = self._tokens.get(base) or await self._authenticate(base)
            try:
                response = await self._http.request(method, f"{base}/api/v0/{path}", params=params,
                                                    headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError as exc:
                raise ControllerUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            if response.status_code != 401 or attempt == 2:
                return response
            self._tokens.pop(base, None)
        raise AssertionError("unreachable")

    async def _authenticate(self, base: str) -> str:
        try:
            response = await self._http.post(f"{base}/api/v0/authenticate", json={
                "username": self._credentials.username, "password": self._credentials.password})
        except httpx.HTTPError as exc:
            raise ControllerUnreachable(f"authenticate: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise ControllerUnreachable(f"authenticate: HTTP {response.status_code}")
        token = response.json()
        if not isinstance(token, str):
            raise ControllerUnreachable("authenticate: no token in the answer")
        self._tokens[base] = token
        return token


def _node_state(node: Any) -> str:
    if not isinstance(node, dict):
        return ""
    operational = node.get("operational")
    if isinstance(operational, dict) and operational.get("state"):
        return str(operational["state"])
    return str(node.get("state", ""))


def _why(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("description", ""))[:200] if isinstance(body, dict) else ""
