"""Autopilot settings: secrets from files, bad values named at start-up and never echoed, the price file."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopilot.bootstrap import prices
from autopilot.settings import AutopilotSettings
from cmlmon_core.settings import load_settings

SECRET = "s3cr3t-value-never-shown"


def test_defaults_are_safe() -> None:
    s = AutopilotSettings()
    assert s.autostop_mode == "off" and s.cml_tls_verify and s.cml_verify() is True
    assert (s.idle_cpu_threshold, s.idle_for_seconds, s.idle_network_threshold) == (5.0, 7200.0, 50_000.0)


def test_secrets_are_read_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token, password = tmp_path / "token", tmp_path / "password"
    token.write_text("tok-123\n")
    password.write_text("pw-456\n")
    monkeypatch.setenv("REGISTRY_TOKEN_FILE", str(token))
    monkeypatch.setenv("CML_PASSWORD_FILE", str(password))
    s = AutopilotSettings()
    assert s.registry_token == "tok-123"
    assert s.cml_password == "pw-456"
    assert "tok-123" not in repr(s) and "pw-456" not in repr(s)


@pytest.mark.parametrize(("env", "named"), [
    ({"AUTOSTOP_MODE": "always"}, "AUTOSTOP_MODE"),
    ({"OFFHOURS_SCHEDULE": "Mon-Fri 08:00-19:00 Mars/Olympus"}, "OFFHOURS_SCHEDULE"),
    ({"IDLE_CPU_THRESHOLD": "0"}, "IDLE_CPU_THRESHOLD"),
    ({"IDLE_NETWORK_THRESHOLD": "-1"}, "IDLE_NETWORK_THRESHOLD"),
    ({"REGISTRY_TOKEN_FILE": "/nonexistent/token"}, "REGISTRY_TOKEN_FILE"),
    ({"CML_PASSWORD_FILE": "/nonexistent/password"}, "CML_PASSWORD_FILE"),
    ({"CML_PASSWORD_FILE": "/dev/null", "CML_PASSWORD": SECRET}, "CML_PASSWORD_FILE"),
    ({"CML_CA_BUNDLE": f"/nonexistent/{SECRET}"}, "CML_CA_BUNDLE"),
])
def test_bad_configuration_fails_naming_the_variable_without_its_value(
        env: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit):
        load_settings(AutopilotSettings)
    err = capsys.readouterr().err
    assert named in err and SECRET not in err


def test_a_price_file_overrides_the_shipped_table(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("c5.metal: 1.25\nx9.metal: 9\n")
    table = prices(AutopilotSettings(prices_file=str(path)))
    assert table["c5.metal"] == 1.25 and table["x9.metal"] == 9.0 and table["m5zn.metal"] > 0
    path.write_text("- not a mapping\n")
    with pytest.raises(ValueError, match="PRICES_FILE"):
        prices(AutopilotSettings(prices_file=str(path)))
