"""Every RPC of both APIs has a role of its own in the servicer's table: a method left out would need admin (the
admission check's safe default), which for a read-only RPC silently locks out viewers and operators."""

from __future__ import annotations

from cml.monitor.v1 import alert_pb2, registry_service_pb2
from cmlmon_core.auth import Role
from notifier.entrypoints import grpc_api as notifier_api
from registry.entrypoints import grpc_api as registry_api


def methods(file: object, service: str) -> set[str]:
    return {m.name for m in file.DESCRIPTOR.services_by_name[service].methods}  # type: ignore[attr-defined]


def test_every_registry_rpc_has_a_role() -> None:
    assert set(registry_api.ROLES) == methods(registry_service_pb2, "WorkerRegistryService")


def test_every_notifier_rpc_has_a_role() -> None:
    assert set(notifier_api.ROLES) == methods(alert_pb2, "AlertService")


def test_reads_are_for_viewers_and_money_is_for_admins() -> None:
    assert registry_api.ROLES["GetWorkerMetrics"] is Role.VIEWER
    assert registry_api.ROLES["CreateWorker"] is Role.ADMIN and registry_api.ROLES["TerminateWorker"] is Role.ADMIN


def test_only_an_operator_writes_a_workers_controller_figures() -> None:
    assert registry_api.ROLES["SetWorkerController"] is Role.OPERATOR  # the autopilot's role; a viewer only reads
