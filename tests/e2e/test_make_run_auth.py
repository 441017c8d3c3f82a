"""`make run` is secure by default and still two commands: it generates an admin token, writes it to
.run/token (0600), prints a grpcurl line using it, imports the demo fleet with it, and the API refuses calls
without it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import registry_service_pb2_grpc as rs_grpc
from cmlmon_dev.servers import free_port

pytestmark = pytest.mark.e2e

PORTS = ("NATS_PORT", "AWS_SIM_PORT", "REGISTRY_GRPC_PORT", "NOTIFIER_GRPC_PORT", "REGISTRY_METRICS_PORT",
         "COLLECTOR_METRICS_PORT", "NOTIFIER_METRICS_PORT", "DEMO_WEBHOOK_PORT")


def test_make_run_generates_a_token_and_the_api_needs_it(tmp_path: Path) -> None:
    ports = {name: free_port() for name in PORTS}
    env = {k: v for k, v in os.environ.items()
           if k not in ("NATS_URL", "AWS_ENDPOINT_URL") and not k.startswith(("GRPC_", "REGISTRY_TOKEN"))}
    env.update({k: str(v) for k, v in ports.items()}, COLLECTOR_REPLICAS="1", RUN_STATE_DIR=str(tmp_path / "run"))
    proc = subprocess.Popen([sys.executable, "-m", "cmlmon_dev.run"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("cmlmon is running" in x for x in lines):
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.5)
        assert any("demo fleet            8 workers imported" in x for x in lines), "".join(lines)
        token_file = tmp_path / "run" / "token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert any(f'-H "authorization: Bearer $(cat {token_file})"' in x for x in lines), "".join(lines)
        assert not any(token in x for x in lines), "the token itself is printed"
        address = f"127.0.0.1:{ports['REGISTRY_GRPC_PORT']}"
        with grpc.insecure_channel(address) as channel:
            stub = rs_grpc.WorkerRegistryServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListWorkers(rs.ListWorkersRequest(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
            listed = stub.ListWorkers(rs.ListWorkersRequest(), metadata=(("authorization", f"Bearer {token}"),),
                                      timeout=10)
            assert len(listed.workers) == 8
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
        reader.join(5)
        proc.stdout.close()  # type: ignore[union-attr]
    assert proc.returncode == 0, "".join(lines[-40:])
