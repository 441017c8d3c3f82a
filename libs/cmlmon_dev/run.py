"""`make run`: the whole system on one machine, each service in a process of its own as deployed.

Starts nats-server with JetStream, the simulated AWS (moto, seeded with the demo fleet and a metrics
generator), the registry, COLLECTOR_REPLICAS collectors, the notifier and (simulated AWS only) the autopilot in
dry-run with a CML controller stand-in for the idle demo worker; imports the demo fleet; prints
where everything listens and every process's output, prefixed. Ctrl-C (or SIGTERM) stops every process it
started: SIGTERM first, SIGKILL after a grace period; children also die with this process (PDEATHSIG).
Every setting given in the environment is passed on to the services."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cml.monitor.v1 import registry_service_pb2 as reg_pb2
from cml.monitor.v1 import registry_service_pb2_grpc as reg_grpc
from cmlmon_core.settings import load_settings
from cmlmon_dev.cml_sim import CmlController
from cmlmon_dev.demo import read_manifest
from cmlmon_dev.receiver import Received, WebhookReceiver
from cmlmon_dev.servers import NatsServer, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
IDLE_DEMO_WORKER = "cml-east-4"


class RunSettings(BaseSettings):
    """Knobs of `make run` (environment variables); the services read their own settings on top."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    run_aws: Literal["simulated", "real"] = "simulated"
    nats_url: str = Field(default="", description="use this NATS instead of starting one")
    nats_port: int = 4222
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

    def signal(self, sig: int) -> None:
        if self.process and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    async def wait(self) -> None:
        if self.pump:
            await self.pump


class Supervisor:
    def __init__(self, settings: RunSettings) -> None:
        self.s = settings
        self.children: list[Child] = []
        self.python = sys.executable

    def env(self, **overrides: str | int) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("LOG_FORMAT", "text")
        env["WORKER_METRICS_POLL_INTERVAL"] = str(self.s.worker_metrics_poll_interval)
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    async def spawn(self, name: str, argv: list[str], env: dict[str, str], *, infrastructure: bool = False
                    ) -> Child:
        child = Child(name, argv, env, infrastructure)
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
                child.signal(signal.SIGKILL)
            await asyncio.gather(*(c.wait() for c in children))


async def wait_serving(address: str, timeout: float = 60.0) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
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


async def import_demo_fleet(address: str, manifest: Path, cml_url: str = "") -> int:
    """Import the demo fleet; the idle demo worker gets its CML controller stand-in's address (tag cml:url)."""
    fleet = read_manifest(manifest)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reg_grpc.WorkerRegistryServiceStub(channel)
        for w in fleet:
            tags = {"cml:role": "worker", "cml:url": cml_url} if cml_url and w.name == IDLE_DEMO_WORKER else {}
            try:
                await stub.ImportWorker(reg_pb2.ImportWorkerRequest(region=w.region, instance_id=w.instance_id,
                                                                    tags=tags), timeout=20)
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


async def run(s: RunSettings) -> int:
    state = s.run_state_dir
    state.mkdir(parents=True, exist_ok=True)
    if s.run_aws == "simulated" and not s.nats_url:
        # The simulated AWS starts empty every time, so its NATS state must too: stale workers would point at
        # instances the new simulation never had.
        shutil.rmtree(state / "jetstream", ignore_errors=True)
    sup = Supervisor(s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    receiver: WebhookReceiver | None = None
    cml: CmlController | None = None
    lines: list[str] = []
    try:
        nats_url = s.nats_url
        if not nats_url:
            nats = NatsServer(state / "jetstream", s.nats_port)
            await sup.spawn("nats", nats.argv(), sup.env(), infrastructure=True)
            await asyncio.to_thread(wait_for_port, s.nats_port)
            nats_url = nats.url
        lines.append(f"NATS (JetStream)      {nats_url}")
        aws: dict[str, str | int] = {}
        manifest = state / "fleet.json"
        if s.run_aws == "simulated":
            manifest.unlink(missing_ok=True)
            endpoint = f"http://127.0.0.1:{s.aws_sim_port}"
            aws = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
                   # The generator's datapoints are stamped "now"; real CloudWatch lands late, the demo does not.
                   "CLOUDWATCH_DELAY_SECONDS": os.environ.get("CLOUDWATCH_DELAY_SECONDS", "0")}
            await sup.spawn("aws-sim", [sup.python, "-m", "cmlmon_dev.aws_sim", "--port", str(s.aws_sim_port),
                                        "--manifest", str(manifest), "--every", str(s.demo_datapoint_every)],
                            sup.env(), infrastructure=True)
            lines.append(f"simulated AWS (moto)  {endpoint}")
        webhooks = s.worker_notification_webhooks
        if not webhooks:
            receiver = await WebhookReceiver(port=s.demo_webhook_port, on_request=print_alert).start()
            webhooks = f"{receiver.url}/alerts"
            lines.append(f"demo webhook receiver {webhooks} (alerts are printed here)")
        common = {"NATS_URL": nats_url, **aws}
        await sup.spawn("registry", [sup.python, "-m", "registry"], sup.env(
            **common, GRPC_PORT=s.registry_grpc_port, METRICS_PORT=s.registry_metrics_port))
        for i in range(s.collector_replicas):
            port = s.collector_metrics_port + 10 * i
            await sup.spawn(f"collector-{i + 1}", [sup.python, "-m", "collector"], sup.env(
                **common, METRICS_PORT=port, SERVICE_INSTANCE_ID=f"collector-{i + 1}",
                REGISTRY_ADDRESS=f"127.0.0.1:{s.registry_grpc_port}"))
            lines.append(f"collector-{i + 1} metrics   http://127.0.0.1:{port}/metrics")
        await sup.spawn("notifier", [sup.python, "-m", "notifier"], sup.env(
            **common, GRPC_PORT=s.notifier_grpc_port, METRICS_PORT=s.notifier_metrics_port,
            WORKER_NOTIFICATION_WEBHOOKS=webhooks))
        if s.run_aws == "simulated":
            # The idle demo worker's controller: one lab, nothing running. The autopilot watches the fleet in
            # dry-run (AUTOSTOP_MODE, IDLE_FOR_SECONDS and the rest can be given to make run).
            cml = await CmlController(port=s.demo_cml_port).start()
            cml.add_lab("STOPPED", "STOPPED")
            await sup.spawn("autopilot", [sup.python, "-m", "autopilot"], sup.env(
                **common, METRICS_PORT=s.autopilot_metrics_port, REGISTRY_ADDRESS=f"127.0.0.1:{s.registry_grpc_port}",
                CML_PASSWORD=cml.password, AUTOSTOP_MODE=os.environ.get("AUTOSTOP_MODE", "dry-run"),
                IDLE_FOR_SECONDS=os.environ.get("IDLE_FOR_SECONDS", "60"),
                AUTOSTOP_GRACE_SECONDS=os.environ.get("AUTOSTOP_GRACE_SECONDS", "30")))
            lines += [f"autopilot metrics     http://127.0.0.1:{s.autopilot_metrics_port}/metrics  "
                      f"({IDLE_DEMO_WORKER} is idle; its CML stand-in: {cml.url})"]
        lines += [f"registry gRPC         127.0.0.1:{s.registry_grpc_port}  (reflection: grpcurl -plaintext "
                  f"127.0.0.1:{s.registry_grpc_port} list)",
                  f"registry metrics      http://127.0.0.1:{s.registry_metrics_port}/metrics",
                  f"notifier gRPC         127.0.0.1:{s.notifier_grpc_port}",
                  f"notifier metrics      http://127.0.0.1:{s.notifier_metrics_port}/metrics"]
        await wait_serving(f"127.0.0.1:{s.registry_grpc_port}")
        if s.run_aws == "simulated":
            await _wait_file(manifest, stop)
            count = await import_demo_fleet(f"127.0.0.1:{s.registry_grpc_port}", manifest,
                                            cml.url if cml is not None else "")
            lines.append(f"demo fleet            {count} workers imported; poll interval "
                         f"{s.worker_metrics_poll_interval}s")
        print("\n".join(["", "cmlmon is running:", *("  " + x for x in lines), "Ctrl-C stops everything.", ""]),
              flush=True)
        await stop.wait()
        return 0
    finally:
        print("stopping...", flush=True)
        await sup.stop_all()
        if receiver is not None:
            await receiver.stop()
        if cml is not None:
            await cml.stop()


async def _wait_file(path: Path, stop: asyncio.Event, timeout: float = 120.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not path.exists():
        if stop.is_set() or asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{path} did not appear")
        await asyncio.sleep(0.2)


def main() -> int:
    return asyncio.run(run(load_settings(RunSettings)))


if __name__ == "__main__":
    sys.exit(main())
