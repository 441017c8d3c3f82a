"""The demo fleet of `make run`: CML-like instances in two regions of the simulated AWS, and a generator
that keeps putting CPU, memory and network datapoints for them (some above the 90 % threshold, one idle)."""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DemoWorker:
    name: str
    region: str
    instance_type: str
    cpu: float  # mean CPU %, the generator adds noise
    memory: float  # mean memory %
    network: float = 300_000.0  # mean bytes per second in + out
    instance_id: str = ""
    image_id: str = ""


FLEET = [
    DemoWorker("cml-east-1", "us-east-1", "c5.metal", cpu=35, memory=48),
    DemoWorker("cml-east-2", "us-east-1", "c5.metal", cpu=97, memory=62),  # hot CPU
    DemoWorker("cml-east-3", "us-east-1", "m5zn.metal", cpu=55, memory=94),  # hot memory
    DemoWorker("cml-east-4", "us-east-1", "c5.metal", cpu=1.5, memory=30, network=1_500),  # idle: autopilot demo
    DemoWorker("cml-west-1", "eu-west-1", "c5.metal", cpu=45, memory=51),
    DemoWorker("cml-west-2", "eu-west-1", "c5.metal", cpu=98, memory=96),  # hot both
    DemoWorker("cml-west-3", "eu-west-1", "c5.9xlarge", cpu=20, memory=40),
    DemoWorker("cml-west-4", "eu-west-1", "m5zn.metal", cpu=65, memory=70),
]


def _client(service: str, region: str, endpoint: str) -> Any:
    return boto3.client(service, region_name=region, endpoint_url=endpoint,
                        aws_access_key_id="demo", aws_secret_access_key="demo")


def seed_fleet(endpoint: str) -> list[DemoWorker]:
    """Launch the demo instances (tagged Name and cml:role=worker); return them with their ids."""
    seeded: list[DemoWorker] = []
    for worker in FLEET:
        ec2 = _client("ec2", worker.region, endpoint)
        image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        reply = ec2.run_instances(
            ImageId=image_id, InstanceType=worker.instance_type, MinCount=1, MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "Name", "Value": worker.name}, {"Key": "cml:role", "Value": "worker"}]}],
        )
        seeded.append(DemoWorker(**{**asdict(worker), "instance_id": reply["Instances"][0]["InstanceId"],
                                    "image_id": image_id}))
    return seeded


def put_datapoints(endpoint: str, fleet: list[DemoWorker], rng: random.Random, every: float = 10.0) -> None:
    """One CPU, one memory and one NetworkIn and NetworkOut datapoint per worker, timestamped now; the network
    ones count the bytes of the last `every` seconds, as EC2's count those of its datapoint interval.

    Memory is written twice, with the InstanceId-only dimension set and with the set the CloudWatch agent
    writes when it appends ImageId and InstanceType, so the collector finds it with either configuration."""
    now = datetime.now(UTC)
    by_region: dict[str, list[DemoWorker]] = {}
    for w in fleet:
        by_region.setdefault(w.region, []).append(w)
    for region, workers in by_region.items():
        cw = _client("cloudwatch", region, endpoint)
        cpu, mem = [], []
        for w in workers:
            cpu += _network(w, every, rng, now)
            iid = [{"Name": "InstanceId", "Value": w.instance_id}]
            full = [*iid, {"Name": "ImageId", "Value": w.image_id}, {"Name": "InstanceType", "Value": w.instance_type}]
            cpu.append({"MetricName": "CPUUtilization", "Dimensions": iid, "Timestamp": now, "Unit": "Percent",
                        "Value": _noisy(w.cpu, rng)})
            value = _noisy(w.memory, rng)
            for dims in (iid, full):
                mem.append({"MetricName": "mem_used_percent", "Dimensions": dims, "Timestamp": now,
                            "Unit": "Percent", "Value": value})
        cw.put_metric_data(Namespace="AWS/EC2", MetricData=cpu)
        cw.put_metric_data(Namespace="CWAgent", MetricData=mem)


def _network(w: DemoWorker, every: float, rng: random.Random, now: datetime) -> list[dict[str, Any]]:
    """NetworkIn (two thirds) and NetworkOut (one third) datapoints, in bytes over `every` seconds."""
    total = max(0.0, rng.gauss(w.network, w.network * 0.1)) * every
    iid = [{"Name": "InstanceId", "Value": w.instance_id}]
    return [{"MetricName": name, "Dimensions": iid, "Timestamp": now, "Unit": "Bytes", "Value": round(total * part)}
            for name, part in (("NetworkIn", 2 / 3), ("NetworkOut", 1 / 3))]


def _noisy(mean: float, rng: random.Random) -> float:
    return round(min(100.0, max(0.0, rng.gauss(mean, 1.5))), 2)


def write_manifest(path: Path, fleet: list[DemoWorker]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(w) for w in fleet], indent=2))
    tmp.replace(path)


def read_manifest(path: Path) -> list[DemoWorker]:
    return [DemoWorker(**row) for row in json.loads(path.read_text())]


def generate_forever(endpoint: str, fleet: list[DemoWorker], every: float) -> None:
    rng = random.Random(7)
    while True:
        try:
            put_datapoints(endpoint, fleet, rng, every)
        except Exception as exc:  # the simulator must outlive a hiccup
            log.warning("putting demo datapoints failed: %r", exc)
        time.sleep(every)
