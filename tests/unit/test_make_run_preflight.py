"""`make run`'s decisions before it starts anything: where its NATS store is, which ports it will take."""

from __future__ import annotations

import socket
from pathlib import Path

from cmlmon_dev.preflight import planned_ports, ports_problem
from cmlmon_dev.run import RunSettings, nats_store


def test_real_and_simulated_runs_never_share_a_nats_store(tmp_path: Path) -> None:
    real = nats_store(RunSettings(run_aws="real", run_state_dir=tmp_path))
    simulated = nats_store(RunSettings(run_aws="simulated", run_state_dir=tmp_path))
    assert real != simulated
    assert real.parent == simulated.parent == tmp_path  # both under .run, git-ignored


def test_every_port_the_run_listens_on_is_planned() -> None:
    s = RunSettings(collector_replicas=3, nats_port=1, aws_sim_port=2, registry_grpc_port=3, notifier_grpc_port=4,
                    registry_metrics_port=5, collector_metrics_port=100, notifier_metrics_port=6,
                    demo_webhook_port=7, autopilot_metrics_port=8, demo_cml_port=9)
    assert sorted(planned_ports(s).values()) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 110, 120]
    given = RunSettings(nats_url="nats://elsewhere:4222", run_aws="real", worker_notification_webhooks="http://x")
    assert "NATS_PORT" not in planned_ports(given)
    assert "AWS_SIM_PORT" not in planned_ports(given)
    assert "AUTOPILOT_METRICS_PORT" not in planned_ports(given)  # the autopilot runs on simulated AWS only
    assert "DEMO_CML_PORT" not in planned_ports(given)
    assert "DEMO_WEBHOOK_PORT" not in planned_ports(given)
    assert "PROMETHEUS_PORT" not in planned_ports(given)
    assert planned_ports(RunSettings(observe=True, prometheus_port=8))["PROMETHEUS_PORT"] == 8  # OBSERVE=1


def test_a_port_chosen_twice_is_named() -> None:
    problem = ports_problem(RunSettings(registry_grpc_port=45999, notifier_grpc_port=45999))
    assert problem is not None
    assert "45999" in problem and "REGISTRY_GRPC_PORT" in problem and "NOTIFIER_GRPC_PORT" in problem


def test_a_port_taken_on_loopback_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        problem = ports_problem(RunSettings(registry_metrics_port=port))
    assert problem is not None and f"{port} (REGISTRY_METRICS_PORT)" in problem
