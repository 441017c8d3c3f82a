"""Auto-stop end to end: idle -> warn -> stop through the registry (moto stops the instance); a lab start in
the grace period cancels it; a running lab, the never-tag and network traffic block it; dry-run stops nothing;
two replicas stop an idle worker once. StopInstances calls are counted where the registry meets AWS (a
counting proxy in front of moto): one in enforce mode, none in dry-run."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from nats.js import JetStreamContext

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import worker_pb2
from cmlmon_dev.cml_sim import CmlController
from tests.integration.autopilot.conftest import Fleet, autopilot_settings, running_autopilots
from tests.support import eventually

pytestmark = pytest.mark.integration


def seen(fleet: Fleet, worker_id: str, action: str) -> Callable[[], bool]:
    return lambda: action in fleet.decisions.actions(worker_id)


def stopped(fleet: Fleet, worker_id: str) -> Callable[[], bool]:
    return seen(fleet, worker_id, "stopped")


def durable() -> str:
    return f"autopilot-{uuid.uuid4().hex[:8]}"


async def test_idle_worker_is_warned_then_stopped_through_the_registry(
        fleet: Fleet, cml: CmlController, nats_url: str, js: JetStreamContext) -> None:
    cml.add_lab("STOPPED", "DEFINED_ON_CORE")
    worker = await fleet.worker({"cml:url": cml.url})
    async with running_autopilots(js, autopilot_settings(nats_url, fleet.registry, durable())):
        for minute in range(0, 16):
            await fleet.sample(worker, minute)
        await eventually(stopped(fleet, worker.id), timeout=60)
    assert fleet.decisions.actions(worker.id) == ["idle", "warned", "stopped"]
    stop = next(d for d in fleet.decisions.seen if d.worker_id == worker.id and d.action == "stopped")
    assert stop.idle_seconds == 15 * 60 and stop.running_nodes == 0
    assert stop.idle_cost == round(stop.hourly_price * 0.25, 2) > 0
    got = (await fleet.registry.stub.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
    assert got.requested_status == worker_pb2.WORKER_STATUS_STOPPED
    assert await fleet.ec2_state(worker) in ("stopping", "stopped")
    assert fleet.aws.made("StopInstances", worker.instance_id) == 1


async def test_a_lab_start_in_the_grace_period_cancels_the_stop(
        fleet: Fleet, cml: CmlController, nats_url: str, js: JetStreamContext) -> None:
    lab = cml.add_lab("STOPPED")
    worker = await fleet.worker({"cml:url": cml.url})
    async with running_autopilots(js, autopilot_settings(nats_url, fleet.registry, durable())):
        for minute in range(0, 11):
            await fleet.sample(worker, minute)
        await eventually(seen(fleet, worker.id, "warned"), timeout=60)
        cml.set_nodes(lab, "BOOTED")
        for minute in range(11, 20):
            await fleet.sample(worker, minute)
        state = await fleet.handled(worker, 19)
        await eventually(seen(fleet, worker.id, "busy"), timeout=60)
    assert fleet.decisions.actions(worker.id) == ["idle", "warned", "cancelled", "busy"]
    assert state.stop_requested_at is None and state.idle.idle_since is None
    assert await fleet.ec2_state(worker) == "running"


@pytest.mark.parametrize("blocker", ["running lab", "never tag", "network traffic"])
async def test_a_running_lab_the_never_tag_or_network_traffic_blocks_the_stop(
        blocker: str, fleet: Fleet, cml: CmlController, nats_url: str, js: JetStreamContext) -> None:
    tags = {"cml:url": cml.url}
    if blocker == "running lab":
        cml.add_lab("BOOTED", "STOPPED")
    elif blocker == "never tag":
        tags["cmlmon:autostop"] = "never"
    network = 400_000.0 if blocker == "network traffic" else 2_000.0  # bytes per second; CPU stays at 1 %
    worker = await fleet.worker(tags)
    async with running_autopilots(js, autopilot_settings(nats_url, fleet.registry, durable())):
        for minute in range(0, 30):
            await fleet.sample(worker, minute, network=network)
        await fleet.handled(worker, 29)
        if blocker == "never tag":  # its notices were published at minute 10: wait for them to arrive
            await eventually(seen(fleet, worker.id, "skipped"), timeout=60)
    expected = ["idle", "skipped"] if blocker == "never tag" else []
    assert fleet.decisions.actions(worker.id) == expected
    assert await fleet.ec2_state(worker) == "running"


async def test_dry_run_says_what_it_would_do_and_stops_nothing(
        fleet: Fleet, cml: CmlController, nats_url: str, js: JetStreamContext) -> None:
    worker = await fleet.worker({"cml:url": cml.url})
    settings = autopilot_settings(nats_url, fleet.registry, durable(), autostop_mode="dry-run")
    async with running_autopilots(js, settings):
        for minute in range(0, 30):
            await fleet.sample(worker, minute)
        await fleet.handled(worker, 29)
        await eventually(seen(fleet, worker.id, "would_stop"), timeout=60)
    # Samples of a worker are handled in order, so every action of the would_stop sample was done before the
    # last sample was: the AWS calls the registry made are all counted by now.
    assert fleet.aws.made("DescribeInstances", worker.instance_id) >= 1  # the proxy does see the registry's calls
    assert fleet.aws.made("StopInstances", worker.instance_id) == 0
    assert fleet.decisions.actions(worker.id) == ["idle", "would_stop"]
    got = (await fleet.registry.stub.GetWorker(rs.GetWorkerRequest(id=worker.id))).worker
    assert got.requested_status == worker_pb2.WORKER_STATUS_UNSPECIFIED
    assert await fleet.ec2_state(worker) == "running"


async def test_two_replicas_stop_an_idle_worker_once(
        fleet: Fleet, cml: CmlController, nats_url: str, js: JetStreamContext) -> None:
    workers = [await fleet.worker({"cml:url": cml.url}) for _ in range(3)]
    name = durable()
    replicas = [autopilot_settings(nats_url, fleet.registry, name) for _ in range(2)]
    async with running_autopilots(js, *replicas):
        # Published at once and every sample twice: the replicas fetch them in batches and judge samples of the
        # same worker at the same time, some of them minutes of observation time apart.
        for minute in range(0, 20):
            for worker in workers:
                for _ in range(2):
                    await fleet.sample(worker, minute)
        # A minute judged after a later one changes nothing, so where an idle run starts, and when the worker
        # is warned and stopped (up to minute 35), depends on how the batches fell and which replica got on
        # first: keep each worker's minutes coming, one at a time, until it is stopped (the stop is claimed in
        # the state before it is done, maybe by the other replica: wait for the event).
        await fleet.feed(workers, range(20, 45), until=lambda w: stopped(fleet, w.id)())
    for worker in workers:
        assert fleet.decisions.actions(worker.id) == ["idle", "warned", "stopped"], worker.id
        assert await fleet.ec2_state(worker) in ("stopping", "stopped")
