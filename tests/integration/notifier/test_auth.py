"""AlertService over real gRPC with authentication: viewers read, operators also silence."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cml.monitor.v1 import alert_pb2, alert_pb2_grpc
from cmlmon_core.auth import Role, token_entry, write_auth_file
from cmlmon_dev.servers import free_port
from tests.integration.notifier.support import notifier_settings, running_notifier

pytestmark = pytest.mark.integration


async def test_silences_need_an_operator(nats_url: str, uid: str, tmp_path: Path) -> None:
    auth = tmp_path / "auth.yaml"
    write_auth_file(auth, [token_entry("view-tok-31", "vic", Role.VIEWER),
                           token_entry("op-tok-42", "oli", Role.OPERATOR)])
    port = free_port()
    settings = notifier_settings(nats_url, uid, grpc_port=port, grpc_auth="required", grpc_auth_file=str(auth))
    end = Timestamp(seconds=int(time.time()) + 600)
    request = alert_pb2.CreateSilenceRequest(worker_id=f"w-{uid}", end_time=end, comment="maintenance")
    async with running_notifier(settings), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = alert_pb2_grpc.AlertServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.ListAlerts(alert_pb2.ListAlertsRequest())
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        viewer = (("authorization", "Bearer view-tok-31"),)
        await stub.ListAlerts(alert_pb2.ListAlertsRequest(), metadata=viewer)
        await stub.ListSilences(alert_pb2.ListSilencesRequest(), metadata=viewer)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.CreateSilence(request, metadata=viewer)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "CreateSilence needs role operator" in (denied.value.details() or "")
        operator = (("authorization", "Bearer op-tok-42"),)
        created = await stub.CreateSilence(request, metadata=operator)
        assert created.silence.created_by == "oli"  # no created_by given: the caller
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.DeleteSilence(alert_pb2.DeleteSilenceRequest(id=created.silence.id), metadata=viewer)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await stub.DeleteSilence(alert_pb2.DeleteSilenceRequest(id=created.silence.id), metadata=operator)
