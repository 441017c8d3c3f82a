"""`make run`: the whole system on one machine, each service in a process of its own as deployed.

Starts nats-server with JetStream, the simulated AWS (moto, seeded with the demo fleet and a metrics
generator), the registry, COLLECTOR_REPLICAS collectors, the notifier and (simulated AWS only) the autopilot in
dry-run with a CML controller stand-in for the idle demo worker; imports the demo fleet; prints
where everything listens and every process's output, prefixed. Every setting given in the environment is
passed on to the services.

At every moment it either runs the whole system or stops all of it:
- before starting anything it checks that every port it would bind is free and, with RUN_AWS=real, that AWS
  accepts the credentials found; each problem is reported in one line and it exits with 2;
- Ctrl-C (or SIGTERM) stops every process it started, during start-up too, and it exits with 0;
- a process that exits on its own (or a start-up step that fails) is reported at once, everything else is
  stopped and it exits with 1: a partial system is never left running.
Stopping is SIGTERM first, SIGKILL after a grace period; children also die with this process (PDEATHSIG)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cml.monitor.v1 import registry_service_pb2 as reg_pb2
from cml.monitor.v1 import registry_service_pb2_grpc as reg_grpc
from cmlmon_core.grpc_client import GrpcTarget
from cmlmon_core.settings import load_settings
from cmlmon_dev import local_auth, observe
from cmlmon_dev.cml_sim import CmlController
from cmlmon_dev.demo import read_manifest
from cmlmon_dev.preflight import preflight
from cmlmon_dev.receiver import Received, WebhookReceiver
from cmlmon_dev.servers import MongoServer, NatsCluster, NatsServer

ROOT = Path(__file__).resolve().parents[2]
CONFIG_ERROR = 2  # found before anything started
FAILED = 1  # something died or failed after start
IDLE_DEMO_WORKER = "cml-east-4"


class RunSettings(BaseSettings):
    """Knobs of `make run` (environment variables); the services read their own settings on top."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    run_aws: Literal["simulated", "real"] = "simulated"
    nats_url: str = Field(default="", description="use this NATS instead of starting one")
    nats_port: int = 4222
    nats_nodes: int = Field(default=1, ge=1, le=5, description="more than 1: a cluster on NATS_PORT, +1, ...")
    aws_sim_port: int = 4566
    registry_grpc_port: int = 50051
    notifier_grpc_port: int = 50052
    registry_metrics_port: int = 9101
    collector_metrics_port: int = 9102
    notifier_metrics_port: int = 9103
    collector_replicas: int = Field(default=2, ge=1, le=9)
    demo_webhook_port: int = 9180
    autopilot_metrics_port: int = 9104
    demo_cml_port: int = 9190  # the CML controller stand-in of the idle demo worker
    worker_metrics_poll_interval: int = Field(default=10, ge=1)
    worker_notification_webhooks: str = ""
    demo_datapoint_every: float = 10.0
    run_state_dir: Path = Field(default=ROOT / ".run", description="NATS store and demo files (git-ignored)")
    stop_grace_seconds: float = 10.0
    aws_check_timeout_seconds: float = Field(default=10.0, gt=0, description="RUN_AWS=real credential check")
    worker_store: Literal["kv", "mongodb"] = "kv"
    mongodb_port: int = Field(default=27017, description="WORKER_STORE=mongodb without MONGODB_URI: secantusdb's port")
    observe: bool = Field(default=False, description="also start Debian's prometheus scraping every service")
    prometheus_port: int = 9090


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM when this supervisor dies, even by SIGKILL, so nothing is orphaned.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    infrastructure: bool = False  # NATS and the simulated AWS stop last, after the services have drained
    process: asyncio.subprocess.Process | None = None
    pump: asyncio.Task[None] | None = field(default=None, repr=False)
    exited: asyncio.Queue[Child] | None = field(default=None, repr=False)  # told when the process ends

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        self.pump = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self.process and self.process.stdout
        async for line in self.process.stdout:
            print(f"{self.name:<12}| {line.decode(errors='replace').rstrip()}", flush=True)
        code = await self.process.wait()
        print(f"{self.name:<12}| exited with {code}", flush=True)
        if self.exited is not None:
            self.exited.put_nowait(self)

    def signal(self, sig: int) -> None:
        if self.process and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    async def wait(self) -> None:
        if self.pump:  # shielded: a caller that gives up waiting must not cancel the output pump
            await asyncio.shield(self.pump)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process else None


class Supervisor:
    def __init__(self, settings: RunSettings) -> None:
        self.s = settings
        self.children: list[Child] = []
        self.python = sys.executable
        self.exited: asyncio.Queue[Child] = asyncio.Queue()

    def env(self, **overrides: str | int) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("LOG_FORMAT", "text")
        env["WORKER_METRICS_POLL_INTERVAL"] = str(self.s.worker_metrics_poll_interval)
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    async def spawn(self, name: str, argv: list[str], env: dict[str, str], *, infrastructure: bool = False
                    ) -> Child:
        child = Child(name, argv, env, infrastructure, exited=self.exited)
        await child.start()
        self.children.append(child)
        return child

    async def stop_all(self) -> None:
        """Services first, so they drain against a live NATS; then NATS and the simulated AWS."""
        await self._stop([c for c in self.children if not c.infrastructure])
        await self._stop([c for c in self.children if c.infrastructure])

    async def _stop(self, children: list[Child]) -> None:
        for child in children:
            child.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(c.wait() for c in children)), self.s.stop_grace_seconds)
        except TimeoutError:
            for child in children:
                if child.returncode is None:
                    print(f"{child.name:<12}| did not stop within {self.s.stop_grace_seconds}s; killing it",
                          flush=True)
                child.signal(signal.SIGKILL)
            await asyncio.gather(*(c.wait() for c in children))


async def wait_serving(target: GrpcTarget, timeout: float = 60.0) -> None:
    address = target.address
    async with target.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{address} not serving after {timeout}s")
            await asyncio.sleep(0.3)


async def import_demo_fleet(target: GrpcTarget, manifest: Path, cml_url: str = "") -> int:
    """Import the demo fleet; the idle demo worker gets its CML controller stand-in's address (tag cml:url)."""
    fleet = read_manifest(manifest)
    async with target.channel() as channel:
        stub = reg_grpc.WorkerRegistryServiceStub(channel)
        for w in fleet:
            tags = {"cml:role": "worker", "cml:url": cml_url} if cml_url and w.name == IDLE_DEMO_WORKER else {}
            try:
                await stub.ImportWorker(reg_pb2.ImportWorkerRequest(region=w.region, instance_id=w.instance_id,
                                                                    tags=tags), timeout=20, metadata=target.metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
    return len(fleet)


def print_alert(item: Received) -> None:
    try:
        body = item.json()
        worker = body.get("worker") or {}
        text = (f"{body.get('status')} {body.get('rule')} on {worker.get('name')} ({worker.get('instance_id')})"
                f" value={body.get('value')} threshold={body.get('threshold')}: {body.get('summary')}")
    except (ValueError, AttributeError):
        text = item.body.decode(errors="replace")
    print(f"{'webhook':<12}| ALERT received: {text}", flush=True)


def nats_store(s: RunSettings) -> Path:
    """The simulation and real AWS never share a NATS store: a real run must not poll the demo's workers."""
    return s.run_state_dir / ("nats-real" if s.run_aws == "real" else "nats-sim")


async def wait_port(port: int, host: str = "127.0.0.1") -> None:
    """Until something accepts connections on the port (cancellable: the supervisor may stop meanwhile)."""
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


async def wait_file(path: Path, timeout: float = 120.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not path.exists():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout}s")
        await asyncio.sleep(0.2)


class Run:
    """One `make run`: starts the processes in order, then watches them until Ctrl-C or one of them dies."""

    def __init__(self, s: RunSettings, sup: Supervisor) -> None:
        self.s = s
        self.sup = sup
        self.receiver: WebhookReceiver | None = None
        self.cml: CmlController | None = None
        self.lines: list[str] = []

    async def start(self) -> None:
        s, sup = self.s, self.sup
        nats_url = s.nats_url or await self.start_nats()
        self.lines.append(f"NATS (JetStream)      {nats_url}")
        aws = await self.start_aws() if s.run_aws == "simulated" else {}
        webhooks = s.worker_notification_webhooks or await self.start_receiver()
        auth = local_auth.prepare(s.run_state_dir)
        registry = auth.target(f"127.0.0.1:{s.registry_grpc_port}")
        common = {"NATS_URL": nats_url, **aws, **auth.env}
        if not s.nats_url and s.nats_nodes > 1:
            common["NATS_STREAM_REPLICAS"] = os.environ.get("NATS_STREAM_REPLICAS", str(s.nats_nodes))
        if s.worker_store == "mongodb" and not os.environ.get("MONGODB_URI"):
            common["MONGODB_URI"] = await self.start_mongodb()
            self.lines.append(f"MongoDB (secantusdb)  {common['MONGODB_URI']}")
        await sup.spawn("registry", [sup.python, "-m", "registry"], sup.env(
            **common, GRPC_PORT=s.registry_grpc_port, METRICS_PORT=s.registry_metrics_port))
        for i in range(s.collector_replicas):
            port = s.collector_metrics_port + 10 * i
            await sup.spawn(f"collector-{i + 1}", [sup.python, "-m", "collector"], sup.env(
                **common, METRICS_PORT=port, SERVICE_INSTANCE_ID=f"collector-{i + 1}",
                REGISTRY_ADDRESS=f"127.0.0.1:{s.registry_grpc_port}"))
            self.lines.append(f"collector-{i + 1} metrics   http://127.0.0.1:{port}/metrics")
        await sup.spawn("notifier", [sup.python, "-m", "notifier"], sup.env(
            **common, GRPC_PORT=s.notifier_grpc_port, METRICS_PORT=s.notifier_metrics_port,
            WORKER_NOTIFICATION_WEBHOOKS=webhooks))
        if s.run_aws == "simulated":
            await self.start_autopilot(common, auth)
        self.lines += [f"registry gRPC         127.0.0.1:{s.registry_grpc_port}", *auth.usage(registry.address),
                       f"registry metrics      http://127.0.0.1:{s.registry_metrics_port}/metrics",
                       f"notifier gRPC         127.0.0.1:{s.notifier_grpc_port}",
                       f"notifier metrics      http://127.0.0.1:{s.notifier_metrics_port}/metrics"]
        self.lines += await _observe(sup, s, s.run_state_dir)
        await wait_serving(registry)
        if s.run_aws == "simulated":
            manifest = s.run_state_dir / "fleet.json"
            await wait_file(manifest)
            count = await import_demo_fleet(registry, manifest, self.cml.url if self.cml is not None else "")
            self.lines.append(f"demo fleet            {count} workers imported; poll interval "
                              f"{s.worker_metrics_poll_interval}s")
        print("\n".join(["", "cmlmon is running:", *("  " + x for x in self.lines), "Ctrl-C stops everything.",
                         ""]), flush=True)

    async def start_nats(self) -> str:
        store = nats_store(self.s)
        if self.s.run_aws == "simulated":
            # The simulated AWS starts empty every time, so its NATS state must too: stale workers would point
            # at instances the new simulation never had.
            shutil.rmtree(store, ignore_errors=True)
        if self.s.nats_nodes == 1:
            nats = NatsServer(store, self.s.nats_port)
            await self.sup.spawn("nats", nats.argv(), self.sup.env(), infrastructure=True)
            await wait_port(self.s.nats_port)
            return nats.url
        # NATS_NODES > 1: a cluster on NATS_PORT, NATS_PORT+1, ..., each node with its store under `store`;
        # the services get every node's URL.
        cluster = NatsCluster(store, self.s.nats_nodes,
                              ports=[self.s.nats_port + i for i in range(self.s.nats_nodes)])
        for i, node in enumerate(cluster.nodes):
            await self.sup.spawn(f"nats-{i + 1}", node.argv(), self.sup.env(), infrastructure=True)
        await asyncio.to_thread(cluster.wait_ready, 60.0, cluster.nodes)
        return cluster.url

    async def start_mongodb(self) -> str:
        """A MongoDB-wire server for the registry's store (secantusdb: a dev tool, GPL, never shipped), empty like
        the simulated AWS."""
        store = self.s.run_state_dir / "mongodb"
        if self.s.run_aws == "simulated":
            shutil.rmtree(store, ignore_errors=True)
        mongo = MongoServer(store, self.s.mongodb_port)
        await self.sup.spawn("mongodb", mongo.argv(), self.sup.env(), infrastructure=True)
        await wait_port(self.s.mongodb_port)
        return mongo.uri

    async def start_aws(self) -> dict[str, str | int]:
        s, sup = self.s, self.sup
        manifest = s.run_state_dir / "fleet.json"
        manifest.unlink(missing_ok=True)
        endpoint = f"http://127.0.0.1:{s.aws_sim_port}"
        await sup.spawn("aws-sim", [sup.python, "-m", "cmlmon_dev.aws_sim", "--port", str(s.aws_sim_port),
                                    "--manifest", str(manifest), "--every", str(s.demo_datapoint_every)],
                        sup.env(), infrastructure=True)
        self.lines.append(f"simulated AWS (moto)  {endpoint}")
        return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
                # The generator's datapoints are stamped "now"; real CloudWatch lands late, the demo does not.
                "CLOUDWATCH_DELAY_SECONDS": os.environ.get("CLOUDWATCH_DELAY_SECONDS", "0")}

    async def start_autopilot(self, common: dict[str, str | int], auth: local_auth.LocalAuth) -> None:
        """The idle demo worker's controller (one lab, nothing running) and the autopilot watching the fleet in
        dry-run (AUTOSTOP_MODE, IDLE_FOR_SECONDS and the rest can be given to make run), with an operator's token."""
        s = self.s
        self.cml = await CmlController(port=s.demo_cml_port).start()
        self.cml.add_lab("STOPPED", "STOPPED")
        own = {**common, **auth.autopilot_env}  # its operator token replaces the collectors' viewer token
        await self.sup.spawn("autopilot", [self.sup.python, "-m", "autopilot"], self.sup.env(
            **own, METRICS_PORT=s.autopilot_metrics_port,
            REGISTRY_ADDRESS=f"127.0.0.1:{s.registry_grpc_port}", CML_PASSWORD=self.cml.password,
            AUTOSTOP_MODE=os.environ.get("AUTOSTOP_MODE", "dry-run"),
            IDLE_FOR_SECONDS=os.environ.get("IDLE_FOR_SECONDS", "60"),
            AUTOSTOP_GRACE_SECONDS=os.environ.get("AUTOSTOP_GRACE_SECONDS", "30")))
        self.lines.append(f"autopilot metrics     http://127.0.0.1:{s.autopilot_metrics_port}/metrics  "
                          f"({IDLE_DEMO_WORKER} is idle; its CML stand-in: {self.cml.url})")

    async def start_receiver(self) -> str:
        self.receiver = await WebhookReceiver(port=self.s.demo_webhook_port, on_request=print_alert).start()
        webhooks = f"{self.receiver.url}/alerts"
        self.lines.append(f"demo webhook receiver {webhooks} (alerts are printed here)")
        return webhooks

    async def stop(self) -> None:
        print("stopping...", flush=True)
        await self.sup.stop_all()
        if self.receiver is not None:
            await self.receiver.stop()
        if self.cml is not None:
            await self.cml.stop()


async def _observe(sup: Supervisor, s: RunSettings, state: Path) -> list[str]:
    """Where the Prometheus and Grafana files are; with OBSERVE=1, a Prometheus scraping every service."""
    if not s.observe:
        return observe.where()
    targets = {"registry": [f"127.0.0.1:{s.registry_metrics_port}"],
               "collector": [f"127.0.0.1:{s.collector_metrics_port + 10 * i}" for i in range(s.collector_replicas)],
               "notifier": [f"127.0.0.1:{s.notifier_metrics_port}"]}
    argv = observe.prometheus_argv(state, s.prometheus_port, targets)
    if argv is None:
        return [*observe.where(), "OBSERVE=1: Debian's prometheus is not installed (apt-get install prometheus)"]
    await sup.spawn("prometheus", argv, sup.env(), infrastructure=True)
    return [*observe.where(), f"Prometheus            http://127.0.0.1:{s.prometheus_port} (every service, "
                              "rules loaded)"]


async def first_of(startup: Coroutine[Any, Any, None], stop: asyncio.Event, exited: asyncio.Queue[Child]
                   ) -> int:
    """Run start-up, then wait, until stop is set (0) or a process exits or start-up fails (1, reported)."""
    started = asyncio.create_task(startup)
    stopped = asyncio.create_task(stop.wait())
    died = asyncio.create_task(exited.get())
    pending: set[asyncio.Task[Any]] = {started, stopped, died}
    try:
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if died in done:
                report(f"{died.result().name} {how_it_ended(died.result().returncode)}; stopping everything")
                return FAILED
            if stopped in done:
                return 0
            if started.exception() is not None:
                report(f"start-up failed: {started.exception()!r}; stopping everything")
                return FAILED
    finally:
        for task in (started, stopped, died):
            task.cancel()
        await asyncio.gather(started, stopped, died, return_exceptions=True)


def how_it_ended(code: int | None) -> str:
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited unexpectedly (exit code {code})"


def report(problem: str) -> None:
    print(f"make run: {problem}", file=sys.stderr, flush=True)


async def run(s: RunSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    check = asyncio.create_task(preflight(s))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({check, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not check.done():  # Ctrl-C while checking: nothing was started
        check.cancel()
        return 0
    problems = check.result()
    for problem in problems:
        report(problem)
    if problems:
        return CONFIG_ERROR
    s.run_state_dir.mkdir(parents=True, exist_ok=True)
    sup = Supervisor(s)
    this = Run(s, sup)
    try:
        return await first_of(this.start(), stop, sup.exited)
    finally:
        await this.stop()


def main() -> int:
    return asyncio.run(run(load_settings(RunSettings)))


if __name__ == "__main__":
    sys.exit(main())
