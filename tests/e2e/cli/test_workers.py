"""`cmlmon workers ...` as an operator runs it: the installed executable against a registry process."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from typing import Any

import boto3
import pytest
import yaml
from nats.js import JetStreamContext

from cmlmon_dev.servers import free_port
from tests.e2e.cli.support import AMI, RUNNING, STOPPED, Fleet, publish_sample
from tests.support import eventually

pytestmark = pytest.mark.e2e


def create(fleet: Fleet, uid: str, region: str = "us-east-1", *extra: str) -> dict[str, Any]:
    done = fleet.run("workers", "create", "--name", f"cli-{uid}", "--region", region, "--instance-type", "c5.large",
                     "--ami", AMI, "--tag", f"test={uid}", *extra, "-o", "json")
    assert done.returncode == 0, done.stderr
    worker: dict[str, Any] = json.loads(done.stdout)
    return worker


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """stderr is exactly one line, "error: ...", and no traceback."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_create_then_list_and_get_as_table_json_and_yaml(fleet: Fleet, uid: str) -> None:
    done = fleet.run("workers", "create", "--name", f"cli-{uid}", "--region", "us-east-1", "--instance-type",
                     "c5.large", "--ami", AMI, "--tag", f"test={uid}", "-o", "json")
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)  # stdout is the document alone; the request id went to stderr
    request_id = re.search(r"request id: (\S+)", done.stderr)
    assert request_id, done.stderr
    assert created["name"] == f"cli-{uid}" and created["tags"] == {"test": uid}
    assert created["status"] in ("WORKER_STATUS_PENDING", "WORKER_STATUS_RUNNING")
    assert list(created)[:5] == ["id", "name", "region", "instance_id", "instance_type"]  # proto order, snake_case

    # the printed request id makes a retry safe: the same worker, no second launch, no new id printed
    again = fleet.run("workers", "create", "--name", f"cli-{uid}", "--region", "us-east-1", "--instance-type",
                      "c5.large", "--ami", AMI, "--tag", f"test={uid}", "--request-id", request_id[1], "-o", "json")
    assert again.returncode == 0 and "request id" not in again.stderr, again.stderr
    assert json.loads(again.stdout)["instance_id"] == created["instance_id"]

    table = fleet.run("workers", "list", "--tag", f"test={uid}")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "NAME", "REGION", "STATUS"] and len(lines) == 2, table.stdout
    assert lines[1].split()[:3] == [created["id"], f"cli-{uid}", "us-east-1"]
    assert "\x1b" not in table.stdout, "no colour when stdout is not a terminal"
    assert all(line == line.rstrip() for line in lines)
    assert "INSTANCE" not in lines[0]

    wide = fleet.run("workers", "list", "--tag", f"test={uid}", "-o", "wide").stdout
    assert created["instance_id"] in wide and f"test={uid}" in wide and "c5.large" in wide

    assert [w["id"] for w in fleet.json("workers", "list", "--tag", f"test={uid}")["workers"]] == [created["id"]]
    got = fleet.run("workers", "get", created["id"], "-o", "yaml")
    assert got.returncode == 0 and yaml.safe_load(got.stdout)["instance_id"] == created["instance_id"]

    elsewhere = fleet.run("workers", "list", "--tag", f"test={uid}", "--region", "eu-west-1")
    assert (elsewhere.returncode, elsewhere.stdout) == (0, "") and "No workers found" in elsewhere.stderr
    assert fleet.json("workers", "list", "--tag", f"test={uid}", "--status", "stopped") == {"workers": []}


def test_exit_codes_and_one_line_errors(fleet: Fleet, uid: str) -> None:
    missing = fleet.run("workers", "get", f"no-such-{uid}")
    assert missing.returncode == 3 and missing.stdout == ""
    assert one_error_line(missing).startswith("error: NOT_FOUND: ") and f"no-such-{uid}" in missing.stderr

    usage = fleet.run("workers", "list", "--status", "sleeping")
    assert usage.returncode == 2 and "sleeping" in usage.stderr and "Traceback" not in usage.stderr
    assert fleet.run("workers", "frobnicate").returncode == 2

    refused = fleet.run("workers", "create", "--name", f"cli-{uid}", "--region", "us-east-1", "--instance-type",
                        "c5.large", "--ami", "not-an-ami")
    assert refused.returncode == 2 and "INVALID_ARGUMENT" in refused.stderr

    down = fleet.run("workers", "list", CMLMON_REGISTRY=f"127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "UNAVAILABLE: cannot reach the registry" in one_error_line(down)

    bad = fleet.run("workers", "list", CMLMON_CALL_TIMEOUT="soon")
    assert bad.returncode == 2 and "CMLMON_CALL_TIMEOUT" in one_error_line(bad) and "soon" not in bad.stderr


def test_import_adopts_an_instance_once(fleet: Fleet, aws_endpoint: str, uid: str) -> None:
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=aws_endpoint)
    instance = ec2.run_instances(ImageId=AMI, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0]
    done = fleet.run("workers", "import", "--region", "us-east-1", "--instance-id", instance["InstanceId"],
                     "--name", f"old-{uid}", "--tag", f"test={uid}")
    assert done.returncode == 0, done.stderr
    assert f"old-{uid}" in done.stdout.splitlines()[1]
    listed = fleet.json("workers", "list", "--tag", f"test={uid}", "-o", "wide")["workers"]
    assert [(w["instance_id"], w["origin"]) for w in listed] == [(instance["InstanceId"], "WORKER_ORIGIN_IMPORTED")]
    twice = fleet.run("workers", "import", "--region", "us-east-1", "--instance-id", instance["InstanceId"])
    assert twice.returncode == 1 and one_error_line(twice).startswith("error: ALREADY_EXISTS: ")


async def test_stop_wait_follows_the_worker_until_stopped(fleet: Fleet, fleet_js: JetStreamContext,
                                                          uid: str) -> None:
    worker = create(fleet, uid)
    await publish_sample(fleet_js, worker, RUNNING)
    await eventually(lambda: fleet.json("workers", "get", worker["id"])["status"] == "WORKER_STATUS_RUNNING",
                     timeout=60)

    waiting = await asyncio.create_subprocess_exec(
        *fleet.argv("workers", "stop", worker["id"], "--wait", "--timeout", "2m", "-o", "json"),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=fleet.env(), cwd=fleet.cwd)
    try:
        await eventually(lambda: fleet.json("workers", "get", worker["id"])["status"] == "WORKER_STATUS_STOPPING",
                         timeout=60)
        assert waiting.returncode is None, "--wait ended while the worker was still STOPPING"
        await publish_sample(fleet_js, worker, STOPPED)  # what a collector sees once EC2 has stopped it
        out, err = await asyncio.wait_for(waiting.communicate(), 60)
    finally:
        if waiting.returncode is None:
            waiting.kill()
            await waiting.wait()
    assert waiting.returncode == 0, err.decode()
    assert [w["status"] for w in json.loads(out)["workers"]] == ["WORKER_STATUS_STOPPED"]

    late = fleet.run("workers", "start", worker["id"], "--wait", "--timeout", "2s")
    assert late.returncode == 1, late.stderr
    assert "timed out after 2s waiting for RUNNING" in late.stderr and "Traceback" not in late.stderr


def test_terminate_asks_on_a_terminal_and_refuses_without_one(fleet: Fleet, uid: str) -> None:
    worker = create(fleet, uid)

    piped = fleet.run("workers", "terminate", worker["id"])
    assert piped.returncode == 2 and "--yes" in one_error_line(piped)

    term = fleet.terminal("workers", "terminate", worker["id"])
    try:
        term.read_until(lambda t: "Terminate? [y/N]" in t)
        assert f"cli-{uid}" in term.text and worker["instance_id"] in term.text  # it says what would go
        term.type("n\n")
        assert term.wait() == 1 and "nothing was terminated" in term.text
    finally:
        term.close()
    assert fleet.json("workers", "get", worker["id"])["status"] != "WORKER_STATUS_SHUTTING_DOWN"

    term = fleet.terminal("workers", "terminate", worker["id"])
    try:
        term.read_until(lambda t: "Terminate? [y/N]" in t)
        term.type("y\n")
        assert term.wait() == 0
        assert "SHUTTING_DOWN" in term.text
    finally:
        term.close()
    assert fleet.json("workers", "get", worker["id"])["status"] == "WORKER_STATUS_SHUTTING_DOWN"


def test_terminate_of_a_worker_whose_licence_cannot_be_released_needs_force(fleet: Fleet, uid: str) -> None:
    # The registry here has no CML credentials: a worker with a controller cannot have its licence released.
    worker = create(fleet, uid, "us-east-1", "--tag", f"cml:url=http://127.0.0.1:{free_port()}")
    refused = fleet.run("workers", "terminate", worker["id"], "--yes")
    assert refused.returncode == 1 and "FAILED_PRECONDITION" in one_error_line(refused)
    assert fleet.json("workers", "get", worker["id"])["status"] != "WORKER_STATUS_SHUTTING_DOWN"
    forced = fleet.run("workers", "terminate", worker["id"], "--yes", "--force", "-o", "json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["workers"][0]["status"] == "WORKER_STATUS_SHUTTING_DOWN"


async def test_metrics_show_the_published_samples_and_reboot_needs_a_running_worker(
        fleet: Fleet, fleet_js: JetStreamContext, uid: str) -> None:
    worker = create(fleet, uid)
    for cpu in (10.0, 20.0, 30.0):  # what a collector publishes; the registry keeps it as the worker's history
        await publish_sample(fleet_js, worker, RUNNING, cpu_utilization=cpu, memory_utilization=50.0)

    def history() -> list[dict[str, Any]]:
        samples: list[dict[str, Any]] = fleet.json("workers", "metrics", worker["id"])["samples"]
        return samples if len(samples) == 3 else []

    samples = await eventually(history, timeout=60, interval=0.5)
    assert [s["cpu_utilization"] for s in samples] == [10.0, 20.0, 30.0]  # oldest first
    [bucket] = fleet.json("workers", "metrics", worker["id"], "--since", "1h", "--step", "1h")["buckets"]
    assert bucket["sample_count"] == 3 and bucket["status"] == "WORKER_STATUS_RUNNING"
    assert bucket["cpu_utilization"] == {"min": 10.0, "avg": 20.0, "max": 30.0}
    assert bucket["memory_utilization"] == {"min": 50.0, "avg": 50.0, "max": 50.0}
    table = fleet.run("workers", "metrics", worker["id"], "--step", "1h")
    assert table.returncode == 0 and "10.0 / 20.0 / 30.0" in table.stdout, table.stdout + table.stderr
    bad = fleet.run("workers", "metrics", worker["id"], "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr

    # the sample made it RUNNING: it reboots; an unknown id fails on its own line with exit code 3
    await eventually(lambda: fleet.json("workers", "get", worker["id"])["status"] == "WORKER_STATUS_RUNNING",
                     timeout=60)
    rebooted = fleet.run("workers", "reboot", worker["id"], f"no-such-{uid}", "-o", "json")
    assert rebooted.returncode == 3, rebooted.stderr
    assert one_error_line(rebooted).startswith(f"error: no-such-{uid}: NOT_FOUND: ")
    assert [w["status"] for w in json.loads(rebooted.stdout)["workers"]] == ["WORKER_STATUS_RUNNING"]

    assert fleet.run("workers", "stop", worker["id"]).returncode == 0
    refused = fleet.run("workers", "reboot", worker["id"])
    assert refused.returncode == 1 and "FAILED_PRECONDITION" in one_error_line(refused)
    assert "only a running instance is rebooted" in refused.stderr
