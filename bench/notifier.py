"""Notifier benchmark.

1. Throughput: N samples (1,000 workers, 5 % over threshold) are published to CML_METRICS first; then a bare
   nats-py pull consumer drains them (fetch + ack, nothing else), then one `python -m notifier` process
   evaluates the same samples end to end (decode, rules, KV state, transitions, ack). Samples per second of
   each, measured from the consumer's own progress on the server, and their ratio (target >= 0.5).
2. Latency: samples at 1,000/s for a while; some workers flip hot/cool so that alerts fire and resolve; the
   time from publishing the sample that causes a transition to a signed webhook (Standard Webhooks, verified
   here) arriving, p50/p99 (target p99 <= 100 ms).

Run: .venv/bin/python bench/notifier.py  (ends with one JSON line)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cml.monitor.v1 import events_pb2, worker_pb2
from cmlmon_core import subjects
from cmlmon_core.messages import encode
from cmlmon_core.topology import METRICS_STREAM, ensure_topology
from cmlmon_dev.receiver import Received, WebhookReceiver
from cmlmon_dev.servers import NatsServer

WORKERS = 1000
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "40000"))
RATE = 1000
LATENCY_SECONDS = float(os.environ.get("BENCH_LATENCY_SECONDS", "15"))
PROBES = 25
SECRET = "whsec_" + base64.b64encode(b"bench-secret-bench-secret-32byte").decode()


def sample(worker_id: str, cpu: float) -> tuple[str, bytes, dict[str, str]]:
    ts = Timestamp()
    ts.GetCurrentTime()
    msg = events_pb2.MetricSample(worker_id=worker_id, region="us-east-1", instance_id="i-0123456789abcdef0",
                                  observe_time=ts, status=worker_pb2.WORKER_STATUS_RUNNING, ec2_state="running",
                                  cpu_utilization=cpu, memory_utilization=40.0, poll_interval_seconds=10,
                                  system_status_check=worker_pb2.STATUS_CHECK_OK,
                                  instance_status_check=worker_pb2.STATUS_CHECK_OK)
    data, headers = encode(msg)
    return subjects.metric("us-east-1", worker_id), data, headers


async def publish_backlog(js: JetStreamContext, run: str) -> None:
    pending = []
    for i in range(SAMPLES):
        w = i % WORKERS
        subject, data, headers = sample(f"{run}-w{w}", 97.0 if w % 20 == 0 else 30.0 + (i % 40))
        pending.append(js.publish(subject, data, headers=headers))
        if len(pending) == 500:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


async def progress(js: JetStreamContext, durable: str, total: int, timeout: float = 300) -> float:
    """Seconds from the consumer's first delivery to all `total` messages acknowledged."""
    start = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = await js.consumer_info(METRICS_STREAM, durable)
        if start is None and info.delivered.consumer_seq:
            start = time.perf_counter()
        if info.ack_floor.consumer_seq >= total and info.num_ack_pending == 0:
            assert start is not None
            return time.perf_counter() - start
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{durable} did not drain {total} messages in {timeout}s")


async def bare_consumer(js: JetStreamContext, durable: str, total: int) -> float:
    config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                            max_ack_pending=4096, filter_subject=subjects.METRICS_ALL)
    sub = await js.pull_subscribe(subjects.METRICS_ALL, durable=durable, stream=METRICS_STREAM, config=config)

    async def drain() -> None:
        done = 0
        while done < total:
            for msg in await sub.fetch(256, timeout=5):
                await msg.ack()
                done += 1

    watcher = asyncio.create_task(progress(js, durable, total))
    await drain()
    elapsed = await watcher
    await sub.unsubscribe()
    return total / elapsed


def start_notifier(nats_url: str, prefix: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    full = {**os.environ, "NATS_URL": nats_url, "METRICS_PORT": "0", "GRPC_PORT": "0", "LOG_LEVEL": "WARNING",
            "GRPC_AUTH": "none",  # the benchmark measures evaluation and delivery, not the API
            "NOTIFIER_CONSUMER_PREFIX": prefix, "ALERT_FOR_SECONDS": "0",
            "ALERT_MIN_SAMPLES": "1", "ALERT_WINDOW_SAMPLES": "1", "NOTIFIER_REPLAY_SECONDS": "3600", **env}
    return subprocess.Popen([sys.executable, "-m", "notifier"], env=full, stdout=subprocess.DEVNULL,
                            stderr=log.open("ab"))


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def notifier_throughput(js: JetStreamContext, nats_url: str, prefix: str, total: int, log: Path) -> float:
    # Create the durable first (as the notifier would, from the start of the stream), then let it bind.
    config = ConsumerConfig(durable_name=prefix, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                            max_ack_pending=4096, ack_wait=30, filter_subject=subjects.METRICS_ALL)
    await js.add_consumer(METRICS_STREAM, config)
    proc = start_notifier(nats_url, prefix, log)
    try:
        return total / await progress(js, prefix, total)
    finally:
        stop(proc)


async def latency(js: JetStreamContext, nats_url: str, prefix: str, run: str, log: Path) -> dict[str, Any]:
    received: dict[tuple[str, str], list[float]] = {}

    def record(item: Received) -> None:
        data = item.json()
        received.setdefault((data["worker_id"], data["status"]), []).append(time.perf_counter())

    receiver = await WebhookReceiver(path="/hook", secret=SECRET, on_request=record).start()
    proc = start_notifier(nats_url, prefix, log, WORKER_NOTIFICATION_WEBHOOKS=receiver.url,
                          WEBHOOK_SECRET=SECRET, NOTIFIER_REPLAY_SECONDS="0")
    sent: dict[tuple[str, str], list[float]] = {}
    try:
        while True:  # ready once its sample consumer exists
            try:
                await js.consumer_info(METRICS_STREAM, prefix)
                break
            except nats.js.errors.NotFoundError:
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        tick, batch = 0.01, RATE // 100
        hot = [False] * PROBES
        start = time.perf_counter()
        for step in range(int(LATENCY_SECONDS / tick)):
            for j in range(batch):
                n = step * batch + j
                if j == 0 and step % 4 == 0:  # a probe flips every 40 ms: ~25 transitions/s
                    p = (step // 4) % PROBES
                    hot[p] = not hot[p]
                    wid = f"{run}-probe{p}"
                    subject, data, headers = sample(wid, 99.0 if hot[p] else 5.0)
                    sent.setdefault((wid, "firing" if hot[p] else "resolved"), []).append(time.perf_counter())
                else:
                    subject, data, headers = sample(f"{run}-lw{n % WORKERS}", 30.0)
                await js.publish(subject, data, headers=headers)
            delay = start + (step + 1) * tick - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        achieved = (int(LATENCY_SECONDS / tick) * batch) / (time.perf_counter() - start)
        expected = sum(len(v) for v in sent.values())
        for _ in range(600):  # up to 30 s for the last deliveries
            if sum(len(v) for v in received.values()) >= expected:
                break
            await asyncio.sleep(0.05)
    finally:
        stop(proc)
        await receiver.stop()
    lat = [(r - s) * 1000 for key, times in sent.items() for s, r in zip(times, received.get(key, []), strict=False)]
    lat.sort()
    return {"latency_samples": len(lat), "transitions_expected": expected, "bad_signatures": len(receiver.rejected),
            "publish_rate": achieved,
            "p50_ms": statistics.median(lat) if lat else None,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None}


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp) / "js") as server:
        log = Path(tmp) / "notifier.log"
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_topology(js)
        run = f"b{int(time.time())}"
        t0 = time.perf_counter()
        await publish_backlog(js, run)
        print(f"published {SAMPLES} samples for {WORKERS} workers in {time.perf_counter() - t0:.1f}s")
        bare = await bare_consumer(js, "bench-bare", SAMPLES)
        print(f"bare nats-py consumer (fetch + ack):  {bare:10.0f} samples/s")
        evaluated = await notifier_throughput(js, server.url, "bench-notifier", SAMPLES, log)
        ratio = evaluated / bare
        print(f"notifier, end to end (one process): {evaluated:10.0f} samples/s  = {ratio:.0%} of bare "
              f"(target >= 50%)")
        lat = await latency(js, server.url, "bench-latency", run, log)
        print(f"latency sample publish -> signed webhook received at {lat['publish_rate']:.0f} samples/s: "
              f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms over {lat['latency_samples']} transitions "
              f"({lat['transitions_expected']} expected, {lat['bad_signatures']} bad signatures; target p99 <= 100 ms)")
        await nc.drain()
    print(json.dumps({
        "bench": "notifier", "samples": SAMPLES, "workers": WORKERS,
        "bare_consumer_samples_per_s": round(bare), "notifier_samples_per_s": round(evaluated),
        "notifier_vs_bare": round(ratio, 3), "latency_publish_rate_per_s": round(lat["publish_rate"]),
        "latency_p50_ms": round(lat["p50_ms"], 2), "latency_p99_ms": round(lat["p99_ms"], 2),
        "latency_transitions": lat["latency_samples"], "transitions_expected": lat["transitions_expected"],
        "bad_signatures": lat["bad_signatures"],
    }))


if __name__ == "__main__":
    asyncio.run(main())
