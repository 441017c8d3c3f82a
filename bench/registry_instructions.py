"""Instructions per call of the registry and of the bare grpc.aio server (bench/registry.py --bare), GetWorker and
ListWorkers, counted by valgrind's callgrind: a figure that, unlike CPU time on a shared machine, does not move
with the neighbours' load, so a change of a few percent in the per-call path shows.

Each server runs under callgrind with instrumentation off until the load generator has made BENCH_WARMUP_CALLS
(50) calls of a kind; then BENCH_CALLS (300) calls are counted, one at a time (BENCH_CALLERS=1; more callers
batch the server's wake-ups differently, and under valgrind the servers are ~50x slower). 10,000 workers
(BENCH_WORKERS) in the KV store, as bench/registry.py seeds them; GRPC_AUTH=none. Instructions are not
everything: a page that reads memory scattered over the heap takes longer than its instruction count says.

Run: .venv/bin/python bench/registry_instructions.py  (needs valgrind; about a minute; ends with one JSON line)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import registry_service_pb2_grpc as rs_grpc
from cmlmon_core.grpc_client import GrpcTarget
from cmlmon_dev.servers import NatsServer, free_port, wait_for_port

BENCH = Path(__file__).with_name("registry.py")
CALLS = int(os.environ.get("BENCH_CALLS", "300"))
WARMUP_CALLS = int(os.environ.get("BENCH_WARMUP_CALLS", "50"))
CALLERS = int(os.environ.get("BENCH_CALLERS", "1"))


def load_bench() -> Any:
    """bench/registry.py as a module (its seeding, page tokens and bare server)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_registry", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def counted(out: Path) -> int:
    """Instructions callgrind has dumped so far into the files of one server (one per dump)."""
    total = 0
    for path in out.parent.glob(out.name + ".*"):
        for line in path.read_text().splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def under_callgrind(args: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    """python args... under callgrind, instrumentation off until switched on; its output next to out."""
    with open(out.with_suffix(".log"), "wb") as log:
        return subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                 f"--callgrind-out-file={out}.%p", sys.executable, *args],
                                env=env, stdout=log, stderr=subprocess.STDOUT)


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


async def count_calls(pid: int, out: Path, port: int, kind: str, ids: list[str], tokens: list[str]) -> float:
    """Instructions per call of `kind` (get or list), instrumentation on only while the counted calls run."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rs_grpc.WorkerRegistryServiceStub(channel)

        async def one(i: int) -> None:
            if kind == "get":
                await stub.GetWorker(rs.GetWorkerRequest(id=ids[i % len(ids)]))
            else:
                await stub.ListWorkers(rs.ListWorkersRequest(page_size=100, page_token=tokens[i % len(tokens)]))

        async def caller(k: int) -> None:
            for i in range(k, CALLS, CALLERS):
                await one(i)

        for i in range(WARMUP_CALLS):
            await one(i)
        before = counted(out)
        control("-z", str(pid))
        control("-i", "on", str(pid))
        await asyncio.gather(*(caller(k) for k in range(CALLERS)))
        control("-i", "off", str(pid))
        control("-d", kind, str(pid))
        return (counted(out) - before) / CALLS


async def main() -> dict[str, Any]:
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        sys.exit("valgrind (with callgrind_control) is needed: apt-get install valgrind")
    bench = load_bench()
    tmp = Path(tempfile.mkdtemp(prefix="bench-registry-instructions-"))
    result: dict[str, Any] = {"bench": "registry_instructions", "workers": bench.WORKERS, "calls": CALLS,
                              "callers": CALLERS}
    with NatsServer(tmp / "js", log_file=tmp / "nats.log") as server:
        ids = await bench.seed(server.url)
        port, bare_port = free_port(), free_port()
        env = {**os.environ, "NATS_URL": server.url, "METRICS_PORT": "0", "GRPC_HOST": "127.0.0.1",
               "GRPC_PORT": str(port), "GRPC_AUTH": "none", "LOG_LEVEL": "WARNING", "WORKER_STORE": "kv",
               "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
        tokens: list[str] = []
        for name, args, served_port in (("registry", ["-m", "registry"], port),
                                        ("bare", [str(BENCH), "--bare", str(bare_port)], bare_port)):
            out = tmp / f"{name}.callgrind"
            process = under_callgrind(args, env, out)
            try:
                await asyncio.to_thread(wait_for_port, served_port, 600)
                tokens = tokens or await bench.page_tokens(GrpcTarget(f"127.0.0.1:{served_port}"))
                figures = {kind: round(await count_calls(process.pid, out, served_port, kind, ids, tokens) / 1000, 1)
                           for kind in ("get", "list")}
            finally:
                process.terminate()
                process.wait(120)
            result[name] = {"get_k_instructions": figures["get"], "list_k_instructions": figures["list"]}
            print(f"{name:8s} GetWorker {figures['get']:7.1f}k instructions per call, ListWorkers "
                  f"{figures['list']:7.1f}k ({CALLS} calls, {CALLERS} caller(s))", flush=True)
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
