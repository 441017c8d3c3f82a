"""`make run`'s view of observability: where the Prometheus and Grafana files live, and with OBSERVE=1 a local
Prometheus (Debian's `prometheus` package, when installed) scraping every service it started, with the
pipeline's alert rules loaded."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "cmlmon-rules.yaml"
GRAFANA = ROOT / "deploy" / "grafana"


def where() -> list[str]:
    rel = {name: path.relative_to(ROOT) for name, path in (("rules", RULES), ("grafana", GRAFANA))}
    return [f"Prometheus rules      {rel['rules']} (OBSERVE=1 starts a Prometheus with them, if installed)",
            f"Grafana dashboards    {rel['grafana']}/dashboards (provisioning in {rel['grafana']}/provisioning)"]


def prometheus_config(targets: Mapping[str, Sequence[str]], scrape_seconds: int = 5) -> dict[str, Any]:
    """Scrape jobs named as the rules expect them (cmlmon-<service>), each with its host:port targets."""
    return {
        "global": {"scrape_interval": f"{scrape_seconds}s", "evaluation_interval": f"{scrape_seconds}s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": f"cmlmon-{service}", "static_configs": [{"targets": list(addresses)}]}
                           for service, addresses in targets.items()],
    }


def prometheus_argv(state: Path, port: int, targets: Mapping[str, Sequence[str]]) -> list[str] | None:
    """The command line of a Prometheus for these targets (its config written under state), or None when
    Debian's prometheus is not installed."""
    binary = shutil.which("prometheus")
    if binary is None:
        return None
    config = state / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(targets), sort_keys=False))
    return [binary, f"--config.file={config}", f"--storage.tsdb.path={state / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
