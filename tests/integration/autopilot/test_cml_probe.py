"""The CML probe against the controller stand-in over real HTTP: figures as the API gives them, running nodes
counted, and a controller that does not answer is unreachable, never zero labs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from cmlmon_core.cml import ControllerUnreachable, Credentials, HttpCmlProbe
from cmlmon_dev.cml_sim import CmlController
from cmlmon_dev.servers import free_port

pytestmark = pytest.mark.integration
CREDS = Credentials("admin", "cml-password")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_reads_health_version_licensing_labs_and_running_nodes(http: httpx.AsyncClient) -> None:
    async with CmlController(authorization="OUT_OF_COMPLIANCE") as cml:
        cml.add_lab("BOOTED", "STARTED", "STOPPED")
        cml.add_lab("DEFINED_ON_CORE")
        got = await HttpCmlProbe(http, CREDS).probe(cml.url)
        assert got.reachable and got.error == ""
        assert (got.version, got.healthy, got.labs, got.running_nodes) == ("2.8.1+build.9", True, 2, 2)
        assert got.licence_registered and got.in_compliance is False
        assert ("POST", "/api/v0/authenticate") in cml.calls


async def test_a_stopped_lab_counts_no_running_node(http: httpx.AsyncClient) -> None:
    async with CmlController() as cml:
        lab = cml.add_lab("BOOTED")
        probe = HttpCmlProbe(http, CREDS)
        assert (await probe.probe(cml.url)).running_nodes == 1
        cml.set_nodes(lab, "STOPPED")
        assert (await probe.probe(cml.url)).running_nodes == 0


async def test_a_closed_port_is_unreachable_not_zero_labs(http: httpx.AsyncClient) -> None:
    got = await HttpCmlProbe(http, CREDS).probe(f"http://127.0.0.1:{free_port()}")
    assert not got.reachable and got.labs is None and got.running_nodes is None
    assert "ConnectError" in got.error


async def test_refused_credentials_are_unreachable(http: httpx.AsyncClient) -> None:
    async with CmlController() as cml:
        got = await HttpCmlProbe(http, Credentials("admin", "wrong")).probe(cml.url)
        assert not got.reachable and got.labs is None and "HTTP 403" in got.error


async def test_a_hanging_controller_is_given_up_on_after_the_time_bound(http: httpx.AsyncClient) -> None:
    async with CmlController(hang=asyncio.Event()) as cml:
        got = await HttpCmlProbe(http, CREDS, timeout=0.5).probe(cml.url)
        assert not got.reachable and got.running_nodes is None and "no answer within" in got.error


async def test_an_expired_token_is_renewed_once(http: httpx.AsyncClient) -> None:
    async with CmlController() as cml:
        probe = HttpCmlProbe(http, CREDS)
        await probe.probe(cml.url)
        cml._tokens.clear()  # the controller restarted
        assert (await probe.probe(cml.url)).reachable
        assert cml.calls.count(("POST", "/api/v0/authenticate")) == 2


async def test_deregistration_refused_while_nodes_run(http: httpx.AsyncClient) -> None:
    async with CmlController() as cml:
        lab = cml.add_lab("BOOTED")
        probe = HttpCmlProbe(http, CREDS)
        with pytest.raises(ControllerUnreachable, match="nodes are running"):
            await probe.deregister_licence(cml.url)
        cml.set_nodes(lab, "STOPPED")
        await probe.deregister_licence(cml.url)
        assert not (await probe.probe(cml.url)).licence_registered
