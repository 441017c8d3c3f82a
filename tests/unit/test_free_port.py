"""free_port with test processes side by side (`make test` runs two under pytest-xdist): each process takes its
ports from its own blocks, so one never gets a port another has picked but not bound yet."""

from __future__ import annotations

import pytest

from cmlmon_dev.servers import PORT_BLOCK, free_port


def test_each_test_process_takes_ports_from_its_own_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    for index in (0, 1):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{index}")
        ports = [free_port() for _ in range(20)]
        assert len(set(ports)) == len(ports)
        assert {(port // PORT_BLOCK) % 2 for port in ports} == {index}
