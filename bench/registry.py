"""Registry benchmark, on each worker store (BENCH_STORES, default "kv,mongodb"): GetWorker and ListWorkers (a page
of 100 out of 10,000 workers) with 50 concurrent callers over loopback, next to a bare grpc.aio server answering
messages of the same size, in the same run; then a metric history benchmark (GetWorkerMetrics).

- Per store, a private nats-server (and for mongodb a private secantusdb, the MongoDB-wire test server); 10,000
  workers written to the store before `python -m registry` starts (it loads them through its KV watch or its
  MongoDB listing + change stream, as after a restart).
- The bare server is `python bench/registry.py --bare PORT`: the same service and message types, every answer a
  prebuilt message (a Worker of the same size for GetWorker, 100 of them for ListWorkers), no work at all.
- Each phase: 50 asyncio callers on one channel for BENCH_SECONDS after a warm-up; BENCH_ROUNDS (3) phases per
  server and kind, the two servers taken in turns (registry first in one round, bare first in the next), pooled:
  throughput and client-side latency p50/p99 over all of them, and the server's CPU per call; the throughput
  ratio of each round is printed too (this 2-core machine's noise moves a single phase by +-15 %). Targets:
  GetWorker >= 90 % of the bare server's throughput; ListWorkers >= 80 % of it and p99 <= 20 ms; registry RSS
  with 10,000 workers <= 200 MB (100,000: <= 500 MB).
- Then samples are published (one per worker; at most 1,000 on mongodb, whose test server is a Python process)
  and the time until the registry's durable consumer has applied them all gives samples per second (each one a
  read and compare-and-set in the store).
- History: BENCH_HISTORY_WORKERS (1,000; 0 skips it) workers with BENCH_HISTORY_SAMPLES (1,440: a day, one a
  minute) samples each, in the registry's history bucket (cml_metric_history) and in CML_METRICS; GetWorkerMetrics
  over one worker's day, raw and with a 300 s step, called in-process BENCH_HISTORY_CALLS (100) times in a row:
  p50/p95/p99 (target p99 <= 50 ms); BENCH_HISTORY_COLD_CALLS (5) single calls each after 12 s idle; then, as a
  baseline in the same run, the same day read from CML_METRICS the way the registry did before the bucket
  (BENCH_HISTORY_BASELINE=0 skips it and CML_METRICS's seeding).

Run: .venv/bin/python bench/registry.py [--workers N]  (ends with one JSON line). BENCH_SECONDS, BENCH_WORKERS
(or --workers) change the phase length and the fleet; with more than 10,000 workers the samples phase publishes
10,000 and the RSS target is 500 MB (issue 14: 100,000 workers, e.g.
`BENCH_STORES=kv BENCH_HISTORY_WORKERS=0 .venv/bin/python bench/registry.py --workers 100000`);
BENCH_PROFILE=<file> runs the registry under cProfile; BENCH_FLOOR=1 adds ListWorkers phases against grpc.aio
alone (identity serializers, answering empty bytes and a pre-serialized page of 100): the floor under the p99
target. BENCH_SECURE=1 serves the
registry as in production, TLS (a test CA made with trustme) and a bearer token checked on every call, against
the same plaintext bare server: the ratio then includes what TLS and authentication cost.

The load generator is Python too (grpc.aio, one channel), on the same two cores as the server: its own CPU per
call (printed as "client") is about the server's, so the latency it measures includes the time each call waits for
the load generator itself. A remote caller does not take the server's cores; so each round also runs the
ListWorkers phase with a C load generator, h2load (Debian's nghttp2-client: one HTTP/2 connection, 50 streams,
the same page request on every call, checked to succeed first), against both servers: its own CPU is about an
eighth of the server's, so its p99 is close to the latency a remote caller would see. Without h2load on PATH that
part is skipped (and said so)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import nats
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pymongo import AsyncMongoClient

from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import registry_service_pb2_grpc as rs_grpc
from cmlmon_core import subjects
from cmlmon_core.auth import Role, token_entry, write_auth_file
from cmlmon_core.grpc_client import GrpcTarget
from cmlmon_core.messages import decode, encode
from cmlmon_core.tls import ClientTls
from cmlmon_core.topology import HISTORY_BUCKET, METRICS_STREAM, ensure_topology
from cmlmon_dev.servers import MongoServer, NatsServer, free_port, wait_for_port

# Run as a script, this file's folder comes first on sys.path and its name hides the registry package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.modules.pop("registry", None)
from registry.adapters import documents  # noqa: E402
from registry.adapters.history import JetStreamMetricHistory, chunk_key, chunk_start, one_sample_chunk  # noqa: E402
from registry.adapters.repository import Stored  # noqa: E402
from registry.bootstrap import bootstrap  # noqa: E402
from registry.service.history import get_worker_metrics  # noqa: E402
from registry.settings import RegistrySettings  # noqa: E402

WORKERS = int(os.environ.get("BENCH_WORKERS", "10000"))
STORES = [s for s in os.environ.get("BENCH_STORES", "kv,mongodb").split(",") if s]
HISTORY_WORKERS = int(os.environ.get("BENCH_HISTORY_WORKERS", "1000"))  # 0 skips the history benchmark
HISTORY_SAMPLES = int(os.environ.get("BENCH_HISTORY_SAMPLES", "1440"))  # per worker: a day, one a minute
HISTORY_CALLS = int(os.environ.get("BENCH_HISTORY_CALLS", "100"))
HISTORY_BASELINE = os.environ.get("BENCH_HISTORY_BASELINE", "1") == "1"  # also the old read of CML_METRICS
HISTORY_REWRITE_MINUTES = 60  # seeding: how often another worker's key is rewritten
# calls after HISTORY_COLD_PAUSE s idle: the server's block cache has expired
HISTORY_COLD_CALLS = int(os.environ.get("BENCH_HISTORY_COLD_CALLS", "5"))
HISTORY_COLD_PAUSE = 12.0
CALLERS = 50
PAGE = 100
SECONDS = float(os.environ.get("BENCH_SECONDS", "6"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))  # phases per server and kind, taken in turns (see bench_store)
SECURE = os.environ.get("BENCH_SECURE", "") == "1"
H2LOAD = shutil.which("h2load") is not None  # the C load generator (nghttp2-client), for the server's own p99
FLOOR = os.environ.get("BENCH_FLOOR", "") == "1"  # also ListWorkers against grpc.aio alone (floor_phases)
WARMUP = 1.0
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1"]


def make_worker(n: int) -> worker_pb2.Worker:
    w = worker_pb2.Worker(
        id=f"w-{n:020x}", name=f"cml-worker-{n:05d}", region=REGIONS[n % len(REGIONS)],
        instance_id=f"i-{n:017x}", instance_type="c5.metal", status=worker_pb2.WORKER_STATUS_RUNNING,
        system_status_check=worker_pb2.STATUS_CHECK_OK, instance_status_check=worker_pb2.STATUS_CHECK_OK,
        cpu_utilization=random.uniform(0, 100), memory_utilization=random.uniform(0, 100),
        tags={"team": f"team-{n % 7}", "env": "prod" if n % 3 else "lab", "owner": f"user{n % 50}"},
        ami_id="ami-0123456789abcdef0", monitoring_mode=worker_pb2.MONITORING_MODE_DETAILED,
        poll_interval_seconds=60, origin=worker_pb2.WORKER_ORIGIN_IMPORTED, etag="123456",
    )
    for ts in (w.create_time, w.update_time, w.last_seen_time):
        ts.GetCurrentTime()
    return w


# --- the bare server ------------------------------------------------------------------------------------------

class BareServicer(rs_grpc.WorkerRegistryServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.get = rs.GetWorkerResponse(worker=make_worker(1))
        self.list = rs.ListWorkersResponse(workers=[make_worker(n) for n in range(PAGE)], next_page_token="x" * 43)

    async def GetWorker(self, request: rs.GetWorkerRequest, context: Any) -> rs.GetWorkerResponse:
        return self.get

    async def ListWorkers(self, request: rs.ListWorkersRequest, context: Any) -> rs.ListWorkersResponse:
        return self.list


SERVICE = rs.DESCRIPTOR.services_by_name["WorkerRegistryService"].full_name


def add_floor(server: grpc.aio.Server, answer: bytes) -> None:
    """ListWorkers answering the same bytes every call, with identity (de)serializers: what grpc.aio itself costs
    per call, no protobuf and no Python work beyond one coroutine."""

    async def list_workers(request: bytes, context: Any) -> bytes:
        return answer

    handlers = {"ListWorkers": grpc.unary_unary_rpc_method_handler(list_workers)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)  # type: ignore[attr-defined]


async def serve_bare(port: int, kind: str = "bare") -> None:
    """kind: "bare" (the generated servicer, prebuilt messages), "floor-empty" (empty answers) or "floor-page" (a
    page of 100 workers, serialized once)."""
    server = grpc.aio.server()
    if kind == "bare":
        rs_grpc.add_WorkerRegistryServiceServicer_to_server(BareServicer(), server)  # type: ignore[abstract]
    else:
        add_floor(server, b"" if kind == "floor-empty" else BareServicer().list.SerializeToString())  # type: ignore[abstract]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


# --- load -----------------------------------------------------------------------------------------------------

@dataclass
class Phase:
    """One phase's raw figures: client-side latencies of the measured calls, all calls made, the server's CPU."""

    latencies: list[float]
    calls_total: int
    server_cpu_seconds: float
    client_cpu_seconds: float  # the load generator's (this process, or h2load)


async def load(call: Callable[[int], Awaitable[Any]]) -> tuple[list[float], int]:
    """CALLERS closed-loop callers for WARMUP + SECONDS: the latencies of the calls after the warm-up, and how many
    calls were made in all."""
    latencies: list[float] = []
    total = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + WARMUP
    end = measure_from + SECONDS

    async def caller(k: int) -> None:
        nonlocal total
        i = k
        while True:
            t0 = time.perf_counter()
            await call(i)
            total += 1
            now = loop.time()
            if now >= end:
                return
            if now >= measure_from:
                latencies.append(time.perf_counter() - t0)
            i += CALLERS

    await asyncio.gather(*(caller(k) for k in range(CALLERS)))
    return latencies, total


def summary(phases: list[Phase]) -> dict[str, float]:
    """Phases of one kind against one server, pooled: throughput over their measured time, latency percentiles
    over all their calls, the server's and the load generator's CPU per call."""
    latencies = sorted(t for phase in phases for t in phase.latencies)
    total = sum(phase.calls_total for phase in phases)
    return {
        "rps": round(len(latencies) / (SECONDS * len(phases)), 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
        "calls": len(latencies),
        "calls_total": total,
        "server_cpu_us_per_call": round(sum(phase.server_cpu_seconds for phase in phases) / total * 1e6, 1),
        "client_cpu_us_per_call": round(sum(phase.client_cpu_seconds for phase in phases) / total * 1e6, 1),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_phase(target: GrpcTarget, pid: int, kind: str, ids: list[str], tokens: list[str]) -> Phase:
    """One phase (GetWorker or ListWorkers) against one server, with that server's CPU: a figure the shared,
    noisy 2-core machine and the Python load generator distort far less than throughput."""
    metadata = target.metadata
    async with target.channel() as channel:
        stub = rs_grpc.WorkerRegistryServiceStub(channel)
        gets = [rs.GetWorkerRequest(id=i) for i in ids]
        lists = [rs.ListWorkersRequest(page_size=PAGE, page_token=t) for t in tokens]

        async def get(i: int) -> Any:
            return await stub.GetWorker(gets[i % len(gets)], metadata=metadata)

        async def list_(i: int) -> Any:
            return await stub.ListWorkers(lists[i % len(lists)], metadata=metadata)

        before, client_before = cpu_seconds(pid), time.process_time()
        latencies, total = await load(get if kind == "get" else list_)
        return Phase(latencies, total, cpu_seconds(pid) - before, time.process_time() - client_before)


def middle_page(tokens: list[str]) -> rs.ListWorkersRequest:
    """The one request the h2load phases repeat: a page from the middle of the fleet."""
    return rs.ListWorkersRequest(page_size=PAGE, page_token=tokens[len(tokens) // 2])


async def c_client_phase(target: GrpcTarget, pid: int, request: rs.ListWorkersRequest, tmp: Path) -> Phase:
    """The ListWorkers phase driven by h2load (C): one connection, CALLERS streams, the same request (one page) on
    every call; a warm-up of 2,000 calls, then SECONDS measured, whose per-request log gives the latencies.
    h2load reads no gRPC status (an error is an HTTP 200 without a body), so the request is first made once with
    grpc and must succeed, and the bytes h2load received must hold a whole answer for every call counted."""
    async with target.channel() as channel:
        answer = await rs_grpc.WorkerRegistryServiceStub(channel).ListWorkers(request, metadata=target.metadata)
    body, log = tmp / "h2load-body", tmp / "h2load.log"
    payload = request.SerializeToString()
    await asyncio.to_thread(body.write_bytes, b"\x00" + len(payload).to_bytes(4, "big") + payload)
    headers = [("content-type", "application/grpc"), ("te", "trailers"), *target.metadata]
    args = ["-c", "1", "-m", str(CALLERS), *(arg for name, value in headers for arg in ("-H", f"{name}: {value}")),
            "-d", str(body), f"{'https' if target.tls else 'http'}://{target.address}/{SERVICE}/ListWorkers"]

    async def h2load(*run: str) -> str:
        process = await asyncio.create_subprocess_exec("h2load", *run, *args, stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.STDOUT)
        out = (await process.communicate())[0].decode()
        if process.returncode != 0 or " 0 failed, 0 errored, 0 timeout" not in out:
            raise RuntimeError(f"h2load failed:\n{out[-2000:]}")
        return out

    await h2load("-n", "2000")
    log.unlink(missing_ok=True)  # h2load appends to its log
    before, h2load_before = cpu_seconds(pid), _children_cpu_seconds()
    out = await h2load("-D", f"{int(SECONDS * 1000)}ms", "--log-file", str(log))
    server_cpu, h2load_cpu = cpu_seconds(pid) - before, _children_cpu_seconds() - h2load_before
    rows = [line.split("\t") for line in (await asyncio.to_thread(log.read_text)).splitlines()]
    if not rows or any(row[1] != "200" for row in rows):
        raise RuntimeError(f"h2load: answers other than HTTP 200 in {log}")
    received = re.search(r"\(([0-9]+)\) data", out)
    if received is None or int(received.group(1)) < len(rows) * (5 + answer.ByteSize()):
        raise RuntimeError(f"h2load: fewer answer bytes than {len(rows)} whole answers (errors?):\n{out[-2000:]}")
    return Phase([int(row[2]) / 1e6 for row in rows], len(rows), server_cpu, h2load_cpu)


def _children_cpu_seconds() -> float:
    """User + system CPU of this process's children that have ended (h2load; the servers still run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- setup ----------------------------------------------------------------------------------------------------

async def seed(nats_url: str) -> list[str]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_topology(js)
    kv = await js.key_value("cml_workers")
    ids: list[str] = []
    batch: list[Awaitable[int]] = []
    for n in range(WORKERS):
        w = make_worker(n)
        w.etag = ""
        ids.append(w.id)
        batch.append(kv.put(w.id, w.SerializeToString()))  # what the registry stores, no outbox
        if len(batch) == 500:
            await asyncio.gather(*batch)
            batch = []
    await asyncio.gather(*batch)
    await nc.drain()
    return ids


async def page_tokens(target: GrpcTarget) -> list[str]:
    tokens = [""]
    async with target.channel() as channel:
        stub = rs_grpc.WorkerRegistryServiceStub(channel)
        while True:
            page = await stub.ListWorkers(rs.ListWorkersRequest(page_size=PAGE, page_token=tokens[-1]),
                                          metadata=target.metadata)
            assert len(page.workers) == PAGE or not page.next_page_token
            if not page.next_page_token:
                return tokens
            tokens.append(page.next_page_token)


def security(tmp: Path, port: int) -> tuple[dict[str, str], GrpcTarget]:
    """The registry's gRPC settings and how to reach it: open and plaintext, or (BENCH_SECURE=1) TLS + token."""
    address = f"127.0.0.1:{port}"
    if not SECURE:
        return {"GRPC_AUTH": "none"}, GrpcTarget(address)
    import trustme  # a dev dependency, like this benchmark

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "server.key"))
    token = "bench-token"
    write_auth_file(tmp / "auth.yaml", [token_entry(token, "bench", Role.VIEWER)])
    env = {"GRPC_AUTH": "required", "GRPC_AUTH_FILE": str(tmp / "auth.yaml"),
           "GRPC_TLS_CERT_FILE": str(tmp / "server.pem"), "GRPC_TLS_KEY_FILE": str(tmp / "server.key")}
    return env, GrpcTarget(address, token, ClientTls(str(tmp / "ca.pem")))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"process {pid} is gone")


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def main() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    result: dict[str, Any] = {"bench": "registry", "secure": SECURE, "workers": WORKERS, "callers": CALLERS,
                              "page_size": PAGE, "seconds": SECONDS, "stores": {}}
    for store in STORES:
        print(f"== worker store: {store}")
        result["stores"][store] = await bench_store(store, tmp / store)
    if HISTORY_WORKERS:
        print("== metric history")
        result["history"] = await bench_history(tmp / "history")
    return result


async def bench_store(store: str, tmp: Path) -> dict[str, Any]:
    """GetWorker, ListWorkers and samples/s of a registry on one worker store (its own NATS, its own MongoDB)."""
    await asyncio.to_thread(tmp.mkdir, parents=True)
    with contextlib.ExitStack() as servers:
        server = servers.enter_context(NatsServer(tmp / "js", log_file=tmp / "nats.log"))
        env = {**os.environ, "NATS_URL": server.url, "METRICS_PORT": "0", "GRPC_HOST": "127.0.0.1",
               "LOG_LEVEL": "WARNING", "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "bench",
               "AWS_SECRET_ACCESS_KEY": "bench", "WORKER_STORE": store}
        t0 = time.perf_counter()
        if store == "mongodb":
            mongo = servers.enter_context(MongoServer(tmp / "mongodb", log_file=tmp / "secantusd.log"))
            env |= {"MONGODB_URI": mongo.uri, "MONGODB_DATABASE": "bench"}
            ids = await seed_mongodb(mongo.uri)
        else:
            ids = await seed(server.url)
        print(f"seeded {WORKERS} workers into {store} in {time.perf_counter() - t0:.1f}s")
        port, bare_port = free_port(), free_port()
        env["GRPC_PORT"] = str(port)
        grpc_env, registry_target = security(tmp, port)
        env.update(grpc_env)
        t0 = time.perf_counter()
        profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        registry = spawn([*profile, "-m", "registry"], env, tmp / "registry.log")
        bare = spawn([__file__, "--bare", str(bare_port)], env, tmp / "bare.log")
        try:
            await asyncio.to_thread(wait_for_port, port, 300)
            ready = time.perf_counter() - t0
            await asyncio.to_thread(wait_for_port, bare_port, 60)
            print(f"registry serving {WORKERS} workers {ready:.1f}s after start")
            tokens = await page_tokens(registry_target)
            print(f"{len(tokens)} pages of {PAGE}; {CALLERS} callers, {SECONDS:.0f}s per phase")
            kinds = ["get", "list", *(["c-list"] if H2LOAD else [])]
            ours: dict[str, list[Phase]] = {kind: [] for kind in kinds}
            theirs: dict[str, list[Phase]] = {kind: [] for kind in kinds}
            sides = [(ours, registry_target, registry.pid), (theirs, GrpcTarget(f"127.0.0.1:{bare_port}"), bare.pid)]
            page = middle_page(tokens)
            # Interleaved, in turns: each round runs both servers back to back, the registry first in even rounds
            # and the bare server first in odd ones, so load from elsewhere and drift hit both sides alike.
            for round_ in range(ROUNDS):
                for kind in kinds:
                    for phases, to, pid in (sides if round_ % 2 == 0 else sides[::-1]):
                        phases[kind].append(await c_client_phase(to, pid, page, tmp) if kind == "c-list"
                                            else await bench_phase(to, pid, kind, ids, tokens))
            if not H2LOAD:
                print("h2load not found (apt-get install nghttp2-client): the C load generator's phases skipped")
            target = {kind: summary(phases) for kind, phases in ours.items()}
            baseline = {kind: summary(phases) for kind, phases in theirs.items()}
            per_round = {kind: [round(len(a.latencies) / len(b.latencies), 3)  # calls in equal measured times
                                for a, b in zip(ours[kind], theirs[kind], strict=True)] for kind in ours}
            memory = rss_mb(registry.pid)
            floor = await floor_phases(env, tmp, tokens) if FLOOR else {}
            samples = await samples_per_second(server.url, ids[:10_000] if store == "kv" else ids[:1000])
            print(f"samples: {samples:.0f}/s applied (one per worker, each a read and compare-and-set in {store})")
        finally:
            stop(registry)
            stop(bare)
    result = report(target, baseline, memory, ready)
    result["ratio_per_round"] = per_round
    print(f"throughput ratios per round: GetWorker {per_round['get']}, ListWorkers {per_round['list']}"
          + (f", ListWorkers with h2load {per_round['c-list']}" if "c-list" in per_round else ""))
    result["samples_applied_per_s"] = round(samples, 1)
    if floor:
        result["floor"] = floor
    return result


async def floor_phases(env: dict[str, str], tmp: Path, tokens: list[str]) -> dict[str, Any]:
    """BENCH_FLOOR=1: the ListWorkers phase against grpc.aio alone (identity serializers), answering empty bytes
    and a serialized page of 100, from both load generators: the server CPU per call and the latency no Python
    server can go below."""
    figures: dict[str, Any] = {}
    for kind in ("floor-empty", "floor-page"):
        port = free_port()
        server = spawn([__file__, "--bare", str(port), kind], env, tmp / f"{kind}.log")
        try:
            await asyncio.to_thread(wait_for_port, port, 60)
            target = GrpcTarget(f"127.0.0.1:{port}")
            figures[kind] = summary([await bench_phase(target, server.pid, "list", [], tokens) for _ in range(ROUNDS)])
            if H2LOAD:
                figures[f"{kind}-h2load"] = summary([await c_client_phase(target, server.pid, middle_page(tokens), tmp)
                                                     for _ in range(ROUNDS)])
        finally:
            stop(server)
        for name in (kind, f"{kind}-h2load"):
            if name in figures:
                print(f"{name}: {_phase_line(figures[name])} (grpc.aio alone, identity serializers)")
    return figures


async def seed_mongodb(uri: str) -> list[str]:
    """The same fleet as seed(), as the MongoDB store's documents (no outbox)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        docs = []
        for n in range(WORKERS):
            w = make_worker(n)
            docs.append(documents.encode_worker(w, None, version=1))
        for i in range(0, len(docs), 1000):
            await client["bench"]["workers"].insert_many(docs[i:i + 1000], ordered=False)
    finally:
        await client.close()
    return [str(d["_id"]) for d in docs]


async def bench_history(tmp: Path) -> dict[str, Any]:
    """GetWorkerMetrics over one day of one worker's samples (one a minute) among HISTORY_WORKERS workers that
    all have a day of samples: the read must not pay for the others. p50/p99 of sequential calls, and in the same
    run the previous read path (CML_METRICS through a consumer filtered on the worker's subject) as a baseline."""
    await asyncio.to_thread(tmp.mkdir, parents=True)
    with NatsServer(tmp / "js", log_file=tmp / "nats.log") as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_topology(js)
        now = int(time.time())
        history = await JetStreamMetricHistory.open(nc, retention_seconds=86_400)
        target = make_worker(HISTORY_WORKERS // 2)
        target.region = "us-east-1"
        appends = await seed_history(js, history, now - 86_400, target.id)
        settings = RegistrySettings(nats_url=server.url, aws_endpoint_url="http://127.0.0.1:9", worker_store="kv")
        registry = (await bootstrap(settings, js, ec2=NoEc2(), history=history)).registry
        registry.view.apply(Stored(target, 1))
        # This process stands in for the registry's, which leaves its start-up heap out of later garbage
        # collections (gc.freeze() in registry.entrypoints.main, once the view is loaded). Without the same here,
        # now and then a full collection walks this process's whole heap inside one call: ~87,000 objects, nearly
        # all from imports (no garbage), 40-160 ms on the shared machine: the raw read's p99 outlier.
        heap = _full_collection()
        gc.freeze()
        print(f"bench process heap: {heap['objects']} tracked objects ({heap['garbage']} of them garbage), a full "
              f"collection {heap['ms']} ms; then frozen, as the registry freezes its own after start-up")
        start = Timestamp(seconds=now - 86_400)
        raw = rs.GetWorkerMetricsRequest(worker_id=target.id, start_time=start, page_size=HISTORY_SAMPLES)
        stepped = rs.GetWorkerMetricsRequest(worker_id=target.id, start_time=start, step=Duration(seconds=300))
        figures: dict[str, Any] = {"append": _percentiles(appends), "heap_before_freeze": heap}
        print(f"history append (the registry's write per sample): {_show(figures['append'])}")
        for name, req, expect in (("raw", raw, HISTORY_SAMPLES), ("step_300s", stepped, HISTORY_SAMPLES // 5)):
            latencies = []
            with GcPauses() as pauses:
                for _ in range(HISTORY_CALLS):
                    t = time.perf_counter()
                    pauses.call_started()
                    got = await get_worker_metrics(registry, req)
                    latencies.append(time.perf_counter() - t)
                    pauses.call_ended()
                    assert len(got.samples or got.buckets) == expect and not got.next_page_token, len(got.samples)
            figures[name] = _percentiles(latencies) | {"first_ms": round(latencies[0] * 1000, 2)}
            figures[name]["slowest"] = pauses.slowest(latencies, 3)
            print(f"history {name}: {expect} points: {_show(figures[name])}, first call "
                  f"{figures[name]['first_ms']} ms (target p99 <= 50 ms); slowest calls (ms, of which garbage "
                  f"collection ms, oldest generation collected): {figures[name]['slowest']}")
        cold = []
        for _ in range(HISTORY_COLD_CALLS):  # a query now and then, as from a person: nothing cached
            await asyncio.sleep(HISTORY_COLD_PAUSE)
            t = time.perf_counter()
            assert len((await get_worker_metrics(registry, raw)).samples) == HISTORY_SAMPLES
            cold.append(round((time.perf_counter() - t) * 1000, 2))
        figures["raw_after_idle_ms"] = cold
        print(f"history raw, each after {HISTORY_COLD_PAUSE:.0f} s idle: {cold} ms")
        if HISTORY_BASELINE:
            subject = subjects.metric("us-east-1", target.id)
            since = start.ToDatetime(tzinfo=datetime.UTC)
            figures["baseline_cml_metrics"] = _percentiles([await _read_cml_metrics(nc, js, subject, since)
                                                            for _ in range(HISTORY_CALLS // 2)])
            print(f"baseline, the same day read from CML_METRICS as before (consumer, receive, decode only): "
                  f"{_show(figures['baseline_cml_metrics'])}")
        bucket = (await js.stream_info(f"KV_{HISTORY_BUCKET}")).state
        figures["bucket"] = {"keys": bucket.messages, "mb": round(bucket.bytes / 1e6, 1)}
        await nc.drain()
    return {"workers": HISTORY_WORKERS, "samples_per_worker": HISTORY_SAMPLES, **figures,
            "targets_met": {"p99_le_50ms": all(figures[n]["p99_ms"] <= 50 for n in ("raw", "step_300s"))
                            and max(figures["raw_after_idle_ms"]) <= 50}}


async def seed_history(js: Any, history: JetStreamMetricHistory, since: int, target_id: str) -> list[float]:
    """A day of samples, minute by minute as the collectors would publish them: the target worker's through the
    registry's own append (its latencies returned); every other worker's key rewritten every
    HISTORY_REWRITE_MINUTES (not every minute, to keep seeding short) so that the bucket holds the same keys,
    interleaved and with deleted older values, as the registry would leave; and, for the baseline, every sample
    in CML_METRICS."""
    t0 = time.perf_counter()
    chunks: dict[str, tuple[str, bytes]] = {}  # worker -> (key, value so far)
    appends: list[float] = []
    pending: list[Awaitable[Any]] = []
    for minute in range(HISTORY_SAMPLES):
        for n in range(HISTORY_WORKERS):
            sample = events_pb2.MetricSample(worker_id=f"w-{n:020x}", region="us-east-1", instance_id=f"i-{n:017x}",
                                             status=worker_pb2.WORKER_STATUS_RUNNING,
                                             cpu_utilization=random.uniform(0, 100), memory_utilization=50.0)
            sample.observe_time.FromSeconds(since + minute * 60)
            if HISTORY_BASELINE:
                data, headers = encode(sample)
                pending.append(js.publish(subjects.metric("us-east-1", sample.worker_id), data, headers=headers,
                                          timeout=60))
            if sample.worker_id == target_id:
                t = time.perf_counter()
                await history.append(sample)
                appends.append(time.perf_counter() - t)
                continue
            key = chunk_key(sample.worker_id, chunk_start(sample.observe_time.ToNanoseconds()))
            old_key, value = chunks.get(sample.worker_id, (key, b""))
            if old_key != key:  # the span is over: its last value, then a new key
                pending.append(js.publish(f"$KV.{HISTORY_BUCKET}.{old_key}", value, timeout=60))
                value = b""
            chunks[sample.worker_id] = (key, value + one_sample_chunk(sample))
            if minute % HISTORY_REWRITE_MINUTES == 0 or minute == HISTORY_SAMPLES - 1:
                pending.append(js.publish(f"$KV.{HISTORY_BUCKET}.{key}", chunks[sample.worker_id][1], timeout=60))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending = []
    await asyncio.gather(*pending)
    print(f"seeded a day of {HISTORY_WORKERS} workers' samples ({HISTORY_WORKERS * HISTORY_SAMPLES}; CML_METRICS "
          f"too: {HISTORY_BASELINE}) in {time.perf_counter() - t0:.1f}s")
    return appends


async def _read_cml_metrics(nc: Any, js: Any, subject: str, since: Any) -> float:
    """Seconds to read a worker's day from CML_METRICS as the registry did before the history bucket: an ephemeral
    consumer filtered on the worker's subject from the start time, one no_wait pull of its pending count onto an
    inbox, every sample decoded; no window filtering or response building (so less than the whole RPC)."""
    t = time.perf_counter()
    info = await js.add_consumer(METRICS_STREAM, ConsumerConfig(
        filter_subject=subject, ack_policy=AckPolicy.NONE, mem_storage=True, inactive_threshold=30.0,
        num_replicas=1, deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since))
    got: list[Any] = []
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        if msg.headers and "Status" in msg.headers:
            done.set()
            return
        got.append(decode(events_pb2.MetricSample, msg.data, msg.headers))
        if len(got) == info.num_pending:
            done.set()

    sub = await nc.subscribe(inbox := nc.new_inbox(), cb=on_msg, pending_msgs_limit=HISTORY_SAMPLES + 16)
    await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{METRICS_STREAM}.{info.name}",
                     json.dumps({"batch": info.num_pending, "no_wait": True}).encode(), reply=inbox)
    await asyncio.wait_for(done.wait(), 60)
    await sub.unsubscribe()
    await js.delete_consumer(METRICS_STREAM, info.name)
    elapsed = time.perf_counter() - t
    assert len(got) == HISTORY_SAMPLES, len(got)
    return elapsed


def _full_collection() -> dict[str, Any]:
    """How many objects the collector tracks in this process, how many of them a full collection finds
    unreachable (garbage in reference cycles), and how long it takes."""
    objects = len(gc.get_objects())
    t = time.perf_counter()
    garbage = gc.collect()
    return {"objects": objects, "garbage": garbage, "ms": round((time.perf_counter() - t) * 1000, 1)}


class GcPauses:
    """The garbage collections during each call (gc.callbacks): whether a slow call waited for the collector."""

    def __init__(self) -> None:
        self._started = 0.0
        self._call: list[tuple[int, float]] = []
        self.calls: list[list[tuple[int, float]]] = []  # per call: (generation, seconds) of each collection

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._call.append((info["generation"], time.perf_counter() - self._started))

    def call_started(self) -> None:
        self._call = []

    def call_ended(self) -> None:
        self.calls.append(self._call)

    def slowest(self, latencies: list[float], n: int) -> list[tuple[float, float, int]]:
        """The n slowest calls: (ms, ms of it in collections, oldest generation collected or -1)."""
        order = sorted(range(len(latencies)), key=latencies.__getitem__, reverse=True)[:n]
        return [(round(latencies[i] * 1000, 1), round(sum(s for _, s in self.calls[i]) * 1000, 1),
                 max((g for g, _ in self.calls[i]), default=-1)) for i in order]


def _percentiles(latencies: list[float]) -> dict[str, Any]:
    latencies = sorted(latencies)
    return {"p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p95_ms": round(latencies[int(len(latencies) * 0.95)] * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
            "max_ms": round(latencies[-1] * 1000, 2), "calls": len(latencies)}


def _show(figures: dict[str, Any]) -> str:
    return (f"p50 {figures['p50_ms']} ms p95 {figures['p95_ms']} ms p99 {figures['p99_ms']} ms max "
            f"{figures['max_ms']} ms ({figures['calls']} calls)")


class NoEc2:
    """The history benchmark never calls EC2."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"EC2 called: {name}")


async def samples_per_second(nats_url: str, ids: list[str]) -> float:
    """One MetricSample per worker on CML_METRICS; how fast the registry's durable consumer applies them."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    started = time.perf_counter()
    pending = []
    for n, worker_id in enumerate(ids):
        sample = events_pb2.MetricSample(worker_id=worker_id, region=REGIONS[n % len(REGIONS)],
                                         instance_id=f"i-{n:017x}", status=worker_pb2.WORKER_STATUS_RUNNING,
                                         cpu_utilization=50.0, memory_utilization=50.0)
        sample.observe_time.GetCurrentTime()
        data, headers = encode(sample)
        pending.append(js.publish(subjects.metric(sample.region, worker_id), data, headers=headers))
        if len(pending) == 500:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    while True:
        info = await js.consumer_info("CML_METRICS", "registry")
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    await nc.drain()
    return len(ids) / elapsed


def _phase_line(f: dict[str, float]) -> str:
    return (f"{f['rps']:7.0f}/s p50 {f['p50_ms']:6.2f} ms p99 {f['p99_ms']:6.2f} ms cpu "
            f"{f['server_cpu_us_per_call']:6.1f} client {f['client_cpu_us_per_call']:6.1f} us/call")


def report(target: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]], memory: float,
           ready: float) -> dict[str, Any]:
    get_ratio = target["get"]["rps"] / baseline["get"]["rps"]
    list_ratio = target["list"]["rps"] / baseline["list"]["rps"]
    list_cpu_ratio = baseline["list"]["server_cpu_us_per_call"] / target["list"]["server_cpu_us_per_call"]
    rss_target = 200 if WORKERS <= 10_000 else 500
    for name in target:
        t, b = target[name], baseline[name]
        print(f"{name:6s} registry {_phase_line(t)} | bare {_phase_line(b)}")
    c_list = target.get("c-list")
    print(f"GetWorker throughput {get_ratio:.0%} of bare (target >= 90%); ListWorkers {list_ratio:.0%} of bare "
          f"(target >= 80%; by server CPU per call {list_cpu_ratio:.0%}); ListWorkers p99 "
          f"{target['list']['p99_ms']:.1f} ms with the Python load generator"
          + (f", {c_list['p99_ms']:.1f} ms with h2load" if c_list else "") + " (target <= 20; the bare server's "
          f"{baseline['list']['p99_ms']:.1f}" + (f" / {baseline['c-list']['p99_ms']:.1f}" if c_list else "")
          + f" ms in the same run); registry RSS {memory} MB with {WORKERS} workers (target <= {rss_target})")
    met = {"get_ratio_ge_0.9": get_ratio >= 0.9, "list_ratio_ge_0.8": list_ratio >= 0.8,
           "list_p99_le_20ms": target["list"]["p99_ms"] <= 20, f"rss_le_{rss_target}mb": memory <= rss_target}
    if c_list:
        met["list_p99_le_20ms_h2load"] = c_list["p99_ms"] <= 20
    return {
        "get": target["get"], "bare_get": baseline["get"], "get_ratio": round(get_ratio, 3),
        "list": target["list"], "bare_list": baseline["list"], "list_ratio": round(list_ratio, 3),
        **({"list_h2load": c_list, "bare_list_h2load": baseline["c-list"]} if c_list else {}),
        "list_cpu_ratio": round(list_cpu_ratio, 3), "registry_rss_mb": memory, "registry_ready_s": round(ready, 2),
        "targets_met": met,
    }


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--bare":
        asyncio.run(serve_bare(int(sys.argv[2]), *sys.argv[3:]))
    else:
        if len(sys.argv) == 3 and sys.argv[1] == "--workers":
            WORKERS = int(sys.argv[2])
        print(json.dumps(asyncio.run(main())))
