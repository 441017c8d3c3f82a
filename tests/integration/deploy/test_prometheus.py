"""deploy/prometheus: the pipeline's alert rules are valid and each is unit-tested by promtool (Debian's
`prometheus` package, installed by .ci/run), firing on its sick input series and quiet on healthy ones."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cmlmon_dev.observe import prometheus_config

ROOT = Path(__file__).resolve().parents[3]
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "cmlmon-rules.yaml"
RULE_TESTS = RULES_DIR / "cmlmon-rules.test.yaml"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus; "
                                                             ".ci/run installs it)")


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def alerts() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


@needs_promtool
def test_rules_are_valid() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_each_rule_passes_its_unit_tests() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_test_that_makes_it_fire() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {check["alertname"] for case in cases for check in case.get("alert_rule_test", [])
              if check.get("exp_alerts")}
    quiet = {check["alertname"] for case in cases for check in case.get("alert_rule_test", [])
             if not check.get("exp_alerts")}
    assert alerts() - firing == set(), "alerts no test makes fire"
    assert alerts() - quiet == set(), "alerts no test shows quiet"
    assert alerts() >= {"CmlmonNoCollector", "CmlmonRegistryDown", "CmlmonNotifierDown", "CmlmonPollLagAboveInterval",
                        "CmlmonAwsThrottled", "CmlmonAwsErrors", "CmlmonConsumerBacklogGrowing",
                        "CmlmonSinkDeliveriesFailing", "CmlmonDeadLetters", "CmlControllerUnhealthy",
                        "CmlLicenceOutOfCompliance"}


@needs_promtool
def test_the_prometheus_of_make_run_observe_is_valid_and_scrapes_every_service(tmp_path: Path) -> None:
    targets = {"registry": ["127.0.0.1:9101"], "collector": ["127.0.0.1:9102", "127.0.0.1:9112"],
               "notifier": ["127.0.0.1:9103"]}
    config = prometheus_config(targets)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)  # also loads the rule files
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout + result.stderr
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs == {f"cmlmon-{name}": addresses for name, addresses in targets.items()}
