"""docker-compose.yml proven by its content (no Docker engine here): its three NATS command lines, run as
written by the wheel's nats-server (service host names mapped to loopback, ports and volumes moved so the
three fit on one machine) with their mounted configuration and the secrets `python -m cmlmon_dev.compose_secrets`
makes, form a JetStream cluster that holds cmlmon's topology at R3 and lets each service in over TLS as its own
NATS user with its own password, and no one without TLS or with a wrong password; every variable a
service is given is one it reads, every published port one it listens on, and every address names a port
that is served; the images are versions that work: NATS with message schedules, the moto the tests pin."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import yaml
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import APIError, ServiceUnavailableError

from cmlmon_core.nats_conn import security_options
from cmlmon_core.settings import CommonSettings
from cmlmon_core.topology import TopologyOptions, ensure_topology
from cmlmon_dev import compose_secrets
from cmlmon_dev.servers import free_port, nats_server_binary, wait_for_port
from tests.integration.deploy.service_env import SETTINGS, listening_ports, reads, settings_from
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
NATS_NODES = sorted(name for name, svc in SERVICES.items() if svc.get("image", "").startswith("nats:"))
NATS_CLIENT_PORT = 4222  # nats-server's default client port: the command lines give no -p
NATS_MONITOR_PORT = 8222
URL = re.compile(r"nats://([^:/,]+):(\d+)")
SECRETS = "/run/secrets/"
# What a cluster still forming answers (no meta leader, peers unknown, JetStream not up yet): ask again.
NOT_READY = (ServiceUnavailableError, APIError, TimeoutError, nats.errors.TimeoutError)

pytestmark = pytest.mark.integration


def interpolate(value: object) -> str:
    """Compose's `${NAME:-default}` / `${NAME-default}` / `${NAME}` as with nothing set in the shell."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))


def service_of(svc: dict[str, Any]) -> str:
    assert svc["command"][:2] == ["python", "-m"]
    return str(svc["command"][2])


def cmlmon_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in SERVICES.items() if svc.get("command", [""])[0] == "python"}


# (a) the NATS cluster, run from the file's own command lines


class ComposeCluster:
    """The compose file's NATS nodes as local processes: `<host>:<port>` of every node becomes 127.0.0.1 and a
    free port, each named volume a folder; the container's files live under `root` at their container paths
    (the bind-mounted configuration copied there, its /run/secrets paths moved under `root` too; the secrets
    made there by compose_secrets); nothing else in the command lines changes."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = tmp / "root"
        self.ports = {(node, port): free_port() for node in NATS_NODES
                      for port in (NATS_CLIENT_PORT, 6222, NATS_MONITOR_PORT)}
        self.processes: list[subprocess.Popen[bytes]] = []
        compose_secrets.main([str(self.secrets)])
        self.mounts = self.mount()

    @property
    def secrets(self) -> Path:
        return self.root / SECRETS.strip("/")

    def url(self, node: str) -> str:
        return f"nats://127.0.0.1:{self.ports[node, NATS_CLIENT_PORT]}"

    def on_host(self, path: str) -> str:
        return str(self.root / path.lstrip("/"))

    def mount(self) -> dict[str, dict[str, str]]:
        """Each node's volumes, container path -> its place here, with every bind-mounted file of the repository
        laid out once under `root`, before any node starts. Not while starting them: the nodes share one `root`,
        and rewriting a configuration file (truncated, then written) while the node started just before reads it
        gave that node an empty configuration, so no TLS and no CMLMON account (it then answered 'JetStream not
        enabled for account' for ever, about one cluster start in two on a loaded machine)."""
        mounts: dict[str, dict[str, str]] = {}
        laid_out: dict[str, str] = {}  # container path -> content written there
        for node in NATS_NODES:
            svc = SERVICES[node]
            mounts[node] = {}
            for volume in svc["volumes"]:
                source, target = volume.split(":")[:2]
                if source.startswith("./"):  # a file of the repository, mounted as it is
                    text = (ROOT / source).read_text().replace(f'"{SECRETS}', f'"{self.secrets}/')
                    assert laid_out.setdefault(target, text) == text, f"{target} differs between the nodes"
                    mounts[node][target] = self.on_host(target)
                else:
                    mounts[node][target] = str(self.tmp / source)
            for secret in svc.get("secrets", []):
                assert (self.secrets / secret).is_file(), f"compose_secrets does not make {node}'s {secret}"
        for target, text in laid_out.items():
            Path(self.on_host(target)).parent.mkdir(parents=True, exist_ok=True)
            Path(self.on_host(target)).write_text(text)
        return mounts

    def argv(self, node: str) -> list[str]:
        command = [str(a) for a in SERVICES[node]["command"]]
        assert command[0].startswith("-"), "the image's entrypoint runs nats-server with arguments starting '-'"
        assert "-p" not in command and "--port" not in command
        volumes = self.mounts[node]

        def moved(arg: str) -> str:
            if arg in volumes:
                return volumes[arg]
            return URL.sub(lambda m: self.address(node, m.group(1), int(m.group(2))), arg)

        # the monitoring port (-m), which the exporters of the observability profile read, moves too
        command = [str(self.ports[node, NATS_MONITOR_PORT]) if prev == "-m" else a
                   for prev, a in zip(["", *command[:-1]], command, strict=True)]
        return [nats_server_binary(), *(moved(a) for a in command), "-a", "127.0.0.1",
                "-p", str(self.ports[node, NATS_CLIENT_PORT])]

    def address(self, node: str, host: str, port: int) -> str:
        target = node if host == "0.0.0.0" else host
        assert target in NATS_NODES, f"{host} is no NATS service of the compose file"
        return f"nats://127.0.0.1:{self.ports[target, port]}"

    def settings(self, name: str, node: str) -> CommonSettings:
        """The NATS settings compose gives the service `name`, its secrets read from here, connecting to node."""
        env = environment(cmlmon_services()[name])
        env = {k: self.on_host(v) if v.startswith(SECRETS) else v for k, v in env.items()}
        env["NATS_URL"] = self.url(node)
        # what CommonSettings does with <NAME>_FILE: the file's content without its final newline
        env["NATS_PASSWORD"] = Path(env.pop("NATS_PASSWORD_FILE")).read_text().removesuffix("\n")
        settings = settings_from(service_of(cmlmon_services()[name]), env)
        assert isinstance(settings, CommonSettings)
        return settings

    async def connect(self, name: str, node: str, **overrides: Any) -> Client:
        settings = self.settings(name, node)
        options: dict[str, Any] = {**security_options(settings), **overrides}
        return await nats.connect(settings.nats_servers, allow_reconnect=False, connect_timeout=5, **options)

    def start(self) -> None:
        for node in NATS_NODES:
            log = open(self.tmp / f"{node}.log", "wb")  # noqa: SIM115 - closed with the process
            self.processes.append(subprocess.Popen(self.argv(node), stdout=log, stderr=subprocess.STDOUT))
            log.close()
        for node in NATS_NODES:
            wait_for_port(self.ports[node, NATS_CLIENT_PORT])
        # the clients come once each node's health check says its JetStream has a meta leader and is current
        deadline = time.monotonic() + 60
        for node in NATS_NODES:
            monitor = f"http://127.0.0.1:{self.ports[node, NATS_MONITOR_PORT]}"
            while httpx.get(f"{monitor}/healthz", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, f"{node}: JetStream not ready within 60 s"
                time.sleep(0.2)
            # every node runs with the mounted configuration: TLS for clients and cmlmon's account (a node that
            # misses them answers 'JetStream not enabled for account' instead of saying why)
            assert httpx.get(f"{monitor}/varz", timeout=5).json().get("tls_required") is True, node
            assert "CMLMON" in httpx.get(f"{monitor}/accountz", timeout=5).json()["accounts"], node

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ComposeCluster]:
    nodes = ComposeCluster(tmp_path)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
        for node in NATS_NODES:  # shown by pytest only when the test failed; whole, since a bad start shows first
            print(f"----- {node} -----\n{(tmp_path / f'{node}.log').read_text(errors='replace')}")


async def test_the_nats_command_lines_form_a_jetstream_cluster_holding_r3_streams(cluster: ComposeCluster) -> None:
    assert len(NATS_NODES) == 3
    subject = f"cml.workers.compose-{uuid.uuid4().hex[:8]}.registered"
    # as the registry: its user, password, inbox prefix and CA, as compose gives them
    async with await cluster.connect("registry", NATS_NODES[0]) as first, \
            await cluster.connect("registry", NATS_NODES[-1]) as last:
        assert first.connected_url is not None and first.client_id is not None
        js = first.jetstream()
        topology = TopologyOptions.from_settings(cluster.settings("registry", NATS_NODES[0]))
        assert topology.replicas == 3

        async def r3_topology() -> Any:  # refused until the meta group has a leader and all peers are known
            await ensure_topology(js, topology)  # cmlmon's own streams, schedules included, on this cluster
            return await js.stream_info("CML_WORKERS")

        info = await eventually(r3_topology, timeout=60, interval=0.5, retrying=NOT_READY)
        assert info.cluster is not None and info.cluster.leader in NATS_NODES
        assert len(info.cluster.replicas or []) == 2
        await js.publish(subject, b"replicated")
        msg = await last.jetstream().get_last_msg("CML_WORKERS", subject)  # asked through another node
        assert msg.data == b"replicated"
    async with httpx.AsyncClient(timeout=5) as http:
        for node in NATS_NODES:  # what the observability profile's exporters read: each node's monitoring port
            varz = (await http.get(f"http://127.0.0.1:{cluster.ports[node, NATS_MONITOR_PORT]}/varz")).json()
            assert varz["server_name"] == node and varz["jetstream"]["config"]
            assert varz["tls_required"] is True


async def handshake(cluster: ComposeCluster, name: str, node: str, password: str) -> bytes:
    """The server's answer to CONNECT as the service's user with this password, over TLS with the compose CA:
    PONG when it lets the client in, -ERR otherwise. By hand rather than through nats-py, which on a refusal
    may report through its error callback and leaves a transport open."""
    settings = cluster.settings(name, node)
    context = ssl.create_default_context(cafile=settings.nats_tls_ca_file)
    reader, writer = await asyncio.open_connection("127.0.0.1", cluster.ports[node, NATS_CLIENT_PORT])
    try:
        info = json.loads((await asyncio.wait_for(reader.readline(), 5)).removeprefix(b"INFO "))
        assert info.get("tls_required") is True and info.get("auth_required") is True, (node, info)
        await writer.start_tls(context, server_hostname=node)  # the certificate names nats-1..3
        connect = {"user": settings.nats_user, "pass": password, "verbose": False, "pedantic": False,
                   "tls_required": True, "protocol": 1}
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 5)).strip()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def test_the_nats_nodes_let_in_each_service_over_tls_with_its_password_only(cluster: ComposeCluster) -> None:
    async def account(js: JetStreamContext) -> Any:  # $JS.API.INFO, answered on the service's own inbox prefix
        return await js.account_info()

    for i, name in enumerate(sorted(cmlmon_services())):
        node = NATS_NODES[i % len(NATS_NODES)]
        async with await cluster.connect(name, node) as nc:
            assert nc.is_connected
            await eventually(partial(account, nc.jetstream()), timeout=60, interval=0.5, retrying=NOT_READY)
        password = cluster.settings(name, node).nats_password
        assert await handshake(cluster, name, node, password) == b"PONG", name
        assert b"authorization violation" in (await handshake(cluster, name, node, "not-" + password)).lower(), name


# (a') the observability profile


def test_each_nats_node_has_an_exporter_reading_its_monitoring_port() -> None:
    exporters = {name: svc for name, svc in SERVICES.items() if "prometheus-nats-exporter" in svc.get("image", "")}
    read = set()
    for svc in exporters.values():
        assert svc["profiles"] == ["observability"]
        url = re.fullmatch(r"http://([^:/]+):(\d+)", svc["command"][-1])
        assert url, svc["command"]
        node, port = url.group(1), url.group(2)
        command = SERVICES[node]["command"]
        assert command[command.index("-m") + 1] == port, f"{node} serves monitoring on another port"
        read.add(node)
    assert read == set(NATS_NODES)
    scraped = {t for job in PROMETHEUS["scrape_configs"] if job["job_name"] == "nats"
               for config in job["static_configs"] for t in config["targets"]}
    assert scraped == {f"{name}:7777" for name in exporters}  # the exporter's default port


def test_prometheus_scrapes_every_service_on_its_metrics_port_and_loads_the_rules() -> None:
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    for name, svc in cmlmon_services().items():
        port = environment(svc)["METRICS_PORT"]
        job = jobs[f"cmlmon-{service_of(svc)}"]
        targets = [t for c in job.get("static_configs", []) for t in c["targets"]]
        names = [f"{n}:{c['port']}" for c in job.get("dns_sd_configs", []) for n in c["names"]]
        assert targets + names == [f"{name}:{port}"], job
    prometheus = SERVICES["prometheus"]
    mounts = dict(m.rsplit(":", 2)[:2] for m in prometheus["volumes"])
    for host in mounts:
        assert (ROOT / host).is_file(), host
    assert set(PROMETHEUS["rule_files"]) <= set(mounts.values())
    assert f"--config.file={mounts['./deploy/prometheus/prometheus.yml']}" in prometheus["command"]


def test_grafana_gets_the_provisioning_and_both_dashboards() -> None:
    grafana = SERVICES["grafana"]
    assert grafana["profiles"] == ["observability"]
    mounts = dict(m.rsplit(":", 2)[:2] for m in grafana["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/cmlmon.yaml").read_text())
    dashboards = provider["providers"][0]["options"]["path"]
    assert mounts["./deploy/grafana/dashboards"] == dashboards
    assert {p.name for p in (ROOT / "deploy/grafana/dashboards").glob("*.json")} == {
        "cmlmon-fleet.json", "cmlmon-pipeline.json"}
    source = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert source["datasources"][0]["url"] == f"http://prometheus:{SERVICES['prometheus']['ports'][0].split(':')[1]}"


# (b) variables and ports


def environment(svc: dict[str, Any]) -> dict[str, str]:
    return {k: interpolate(v) for k, v in (svc.get("environment") or {}).items()}


@pytest.mark.parametrize("name", sorted(cmlmon_services()))
def test_every_variable_a_service_gets_is_one_it_reads_with_a_valid_value(name: str) -> None:
    svc = cmlmon_services()[name]
    service = service_of(svc)
    env = environment(svc)
    assert not [n for n in env if not reads(service, n)], f"{name} gets variables it never reads"
    settings_from(service, env)  # raises naming a bad value
    assert env["NATS_STREAM_REPLICAS"] == "3", "compose runs a 3-node cluster: streams at R3"


def test_the_four_services_are_all_there() -> None:
    assert {service_of(s) for s in cmlmon_services().values()} == set(SETTINGS)


@pytest.mark.parametrize("name", sorted(cmlmon_services()))
def test_published_ports_are_the_ones_the_service_listens_on(name: str) -> None:
    svc = cmlmon_services()[name]
    ports = listening_ports(settings_from(service_of(svc), environment(svc)))
    for mapping in svc.get("ports", []):
        assert int(mapping.split(":")[-1]) in ports.values(), f"{name} publishes {mapping}"
    if "grpc_port" in ports:  # a gRPC service that is not published cannot be reached from outside
        assert any(int(m.split(":")[-1]) == ports["grpc_port"] for m in svc.get("ports", [])), name


def test_addresses_name_served_ports() -> None:
    for name, svc in cmlmon_services().items():
        env = environment(svc)
        for host, port in URL.findall(env["NATS_URL"]):
            assert host in NATS_NODES and int(port) == NATS_CLIENT_PORT, (name, host, port)
        if "REGISTRY_ADDRESS" in env:
            host, port = env["REGISTRY_ADDRESS"].rsplit(":", 1)
            registry = SERVICES[host]
            assert int(port) == listening_ports(settings_from(service_of(registry), environment(registry)))[
                "grpc_port"]
    assert any(m.split(":")[-1] == str(NATS_CLIENT_PORT) for m in SERVICES[NATS_NODES[0]]["ports"])


# (c) images


def image_version(image: str) -> tuple[int, ...]:
    tag = image.rsplit(":", 1)[1]
    found = re.match(r"(\d+(?:\.\d+)*)", tag)
    assert found, f"{image}: the tag names no version"
    return tuple(int(p) for p in found.group(1).split("."))


def test_nats_image_supports_message_schedules() -> None:
    for node in NATS_NODES:
        assert image_version(SERVICES[node]["image"]) >= (2, 12), "message schedules came in NATS 2.12"


def test_the_simulated_aws_is_the_moto_the_tests_pin() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    pinned = next(re.match(r"moto(\[[^\]]*\])?==(\S+)", d) for d in deps if d.startswith("moto"))
    assert pinned, "moto is pinned in the dev extra"
    sim = SERVICES["aws-sim"]
    assert sim["image"] == f"motoserver/moto:{pinned.group(2)}"
    assert sim["profiles"] == ["sim"]

