"""What would make `make run` fail, found before it starts anything: a port it would listen on is taken, or
(RUN_AWS=real) AWS does not accept the credentials found. Each problem is one line naming what to change."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from cmlmon_dev.aws_check import credentials_problem

if TYPE_CHECKING:
    from cmlmon_dev.run import RunSettings

T = TypeVar("T")


def planned_ports(s: RunSettings) -> dict[str, int]:
    """Every port this run will listen on, by the setting that chooses it."""
    ports = {"REGISTRY_GRPC_PORT": s.registry_grpc_port, "NOTIFIER_GRPC_PORT": s.notifier_grpc_port,
             "REGISTRY_METRICS_PORT": s.registry_metrics_port, "NOTIFIER_METRICS_PORT": s.notifier_metrics_port}
    for i in range(s.collector_replicas):
        ports[f"COLLECTOR_METRICS_PORT (+{10 * i}, collector-{i + 1})" if i else "COLLECTOR_METRICS_PORT"] = (
            s.collector_metrics_port + 10 * i)
    if not s.nats_url:
        ports["NATS_PORT"] = s.nats_port
        for i in range(1, s.nats_nodes):
            ports[f"NATS_PORT (+{i}, nats-{i + 1})"] = s.nats_port + i
    if s.run_aws == "simulated":
        ports["AWS_SIM_PORT"] = s.aws_sim_port
    if not s.worker_notification_webhooks:
        ports["DEMO_WEBHOOK_PORT"] = s.demo_webhook_port
    return ports


def port_in_use(port: int) -> bool:
    """True when something listens on the port (on any address: the services bind 0.0.0.0)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no owner
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def ports_problem(s: RunSettings) -> str | None:
    ports = planned_ports(s)
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            return f"port {port} is chosen twice ({seen[port]} and {name}); give one of them another port"
        seen[port] = name
    busy = [f"{port} ({name})" for name, port in ports.items() if port_in_use(port)]
    if busy:
        return (f"port{'s' if len(busy) > 1 else ''} already in use: {', '.join(busy)}; stop what uses "
                f"{'them' if len(busy) > 1 else 'it'} or set another port")
    return None


async def preflight(s: RunSettings) -> list[str]:
    """What would make this run fail, found before anything starts: one line per problem, none when fine."""
    problems = [p for p in (ports_problem(s),) if p is not None]
    if s.run_aws == "real":
        print("checking AWS credentials...", flush=True)
        credentials = await in_daemon_thread(
            lambda: credentials_problem(os.environ.get("AWS_REGION", "us-east-1"), s.aws_check_timeout_seconds))
        if credentials is not None:
            problems.append(credentials)
    return problems


async def in_daemon_thread(call: Callable[[], T]) -> T:
    """call() in a thread that Ctrl-C does not have to wait for (asyncio.to_thread's would be joined at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def work() -> None:
        try:
            result = call()
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(_settle_future, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle_future, future, result, None)

    threading.Thread(target=work, name="make-run-check", daemon=True).start()
    return await future


def _settle_future(future: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile: stopping
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
