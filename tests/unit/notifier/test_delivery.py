from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from notifier.adapters.sinks import env_proxy
from notifier.domain.payloads import AlertView
from notifier.domain.retry import RetryPolicy
from notifier.errors import DeliveryFailed, SinkConfigError
from notifier.service.delivery import Deliverer
from notifier.settings import NotifierSettings
from notifier.sink_config import sink_specs, url_sink_name
from tests.unit.notifier.fakes import ScriptedSink

ALERT = AlertView(alert_id="w.cpu_high", transition_id="t1", status="firing", worker_id="w", worker_name="n",
                  instance_id="i", region="r", rule="cpu_high", severity="warning", value=95.0, threshold=90.0,
                  summary="s", start_time=1.0, end_time=None)


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.dead: list[tuple[str, int]] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def dead_letter(self, reason: str, attempts: int) -> None:
        self.dead.append((reason, attempts))


def deliverer(sink: ScriptedSink, rec: Recorder, attempts: int = 4) -> Deliverer:
    return Deliverer(sink, RetryPolicy(max_attempts=attempts, initial_seconds=1, max_seconds=30), rand=lambda: 0.0,
                     sleep=rec.sleep)


async def test_retries_with_backoff_then_delivers_once() -> None:
    sink, rec = ScriptedSink([DeliveryFailed("HTTP 503"), DeliveryFailed("timeout")]), Recorder()
    assert await deliverer(sink, rec).deliver(ALERT, rec.dead_letter) == "delivered"
    assert sink.sent == [ALERT] and rec.sleeps == [0.5, 1.0] and not rec.dead


async def test_retry_after_is_honoured() -> None:
    sink, rec = ScriptedSink([DeliveryFailed("429", retry_after=12)]), Recorder()
    await deliverer(sink, rec).deliver(ALERT, rec.dead_letter)
    assert rec.sleeps == [12.0]


async def test_gives_up_after_bounded_attempts_into_dead_letter() -> None:
    sink, rec = ScriptedSink([DeliveryFailed("HTTP 500")] * 10), Recorder()
    assert await deliverer(sink, rec, attempts=3).deliver(ALERT, rec.dead_letter) == "dead_lettered"
    assert rec.dead == [("HTTP 500 after 3 attempt(s)", 3)] and not sink.sent


async def test_client_error_is_not_retried() -> None:
    sink, rec = ScriptedSink([DeliveryFailed("HTTP 400 (rejected)", retryable=False)]), Recorder()
    assert await deliverer(sink, rec).deliver(ALERT, rec.dead_letter) == "dead_lettered"
    assert rec.sleeps == [] and rec.dead[0][1] == 1


async def test_gone_disables_the_sink() -> None:
    sink, rec = ScriptedSink([DeliveryFailed("410 Gone", retryable=False, gone=True)]), Recorder()
    d = deliverer(sink, rec)
    assert await d.deliver(ALERT, rec.dead_letter) == "disabled"
    assert await d.deliver(ALERT, rec.dead_letter) == "dead_lettered"
    assert not sink.sent and d.disabled_reason and len(rec.dead) == 2


async def test_silenced_alerts_are_not_sent() -> None:
    from dataclasses import replace
    sink, rec = ScriptedSink([]), Recorder()
    assert await deliverer(sink, rec).deliver(replace(ALERT, silenced=True), rec.dead_letter) == "silenced"
    assert not sink.sent


def test_sinks_from_environment_and_yaml(tmp_path: Path) -> None:
    sinks_file = tmp_path / "sinks.yaml"
    sinks_file.write_text(
        "sinks:\n"
        "  - {name: ops, type: webhook, url: 'https://example.com/h', secret: whsec_AAAA}\n"
        "  - {type: pagerduty, routing_key: RK}\n"
        "  - {name: am, type: alertmanager, url: 'http://127.0.0.1:9093'}\n"
        "  - {name: genie-eu, type: opsgenie, api_key: K2, region: eu}\n"
    )
    settings = NotifierSettings(worker_notification_webhooks="http://a/x?token=1, http://b/y",
                                webhook_secret="whsec_AAAA", slack_webhook_url="https://hooks.slack.com/x",
                                notifier_sinks_file=str(sinks_file), opsgenie_api_key=SecretStr("K1"))
    specs = {s.name: s for s in sink_specs(settings)}
    assert (specs["opsgenie"].url, specs["opsgenie"].api_key) == ("https://api.opsgenie.com", "K1")
    assert (specs["genie-eu"].url, specs["genie-eu"].api_key) == ("https://api.eu.opsgenie.com", "K2")
    assert "K1" not in repr(specs["opsgenie"]) and "K1" not in repr(settings)
    assert specs["log"].kind == "log"
    assert specs[url_sink_name("webhook", "http://a/x?token=1")].secret == "whsec_AAAA"
    assert "token" not in url_sink_name("webhook", "http://a/x?token=1")
    assert specs["slack"].kind == "slack" and specs["ops"].url == "https://example.com/h"
    assert specs["am"].kind == "alertmanager"
    assert any(s.kind == "pagerduty" and s.routing_key == "RK" for s in specs.values())


@pytest.mark.parametrize("content", [
    "sinks: {a: 1}", "sinks:\n  - {type: carrier-pigeon}", "sinks:\n  - {type: webhook, url: ftp://x}",
    "sinks:\n  - {type: pagerduty}", "sinks:\n  - {type: opsgenie}",
    "sinks:\n  - {type: opsgenie, api_key: k, region: mars}",
    "sinks:\n  - {type: webhook, url: 'http://x', secret: nope}",
    "sinks:\n  - {name: 'bad name', type: log}", "sinks:\n  - {name: log, type: log}",
])
def test_bad_sinks_file_is_refused(tmp_path: Path, content: str) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(content)
    with pytest.raises(SinkConfigError):
        sink_specs(NotifierSettings(notifier_sinks_file=str(f)))


def test_bad_sink_variables_are_named_never_echoed() -> None:
    for settings in (NotifierSettings(webhook_secret="plain-secret-value"),
                     NotifierSettings(webhook_secret="whsec_not*base64*secret-value"),
                     NotifierSettings(worker_notification_webhooks="http://ok/a, secret-value.example/x"),
                     NotifierSettings(slack_webhook_url="hooks.slack.com/secret-value")):
        with pytest.raises(SinkConfigError) as err:
            sink_specs(settings)
        assert "secret-value" not in str(err.value)
        assert any(n in str(err.value) for n in ("WEBHOOK_SECRET", "WORKER_NOTIFICATION_WEBHOOKS",
                                                  "SLACK_WEBHOOK_URL"))


def test_settings_parse_the_webhook_list() -> None:
    assert NotifierSettings(worker_notification_webhooks=" http://a , ,http://b").webhook_urls == ["http://a",
                                                                                                   "http://b"]
    defaults = NotifierSettings()
    assert (defaults.grpc_port, defaults.metrics_port, defaults.worker_cpu_threshold) == (50052, 9103, 90.0)


def test_a_sinks_proxy_comes_from_the_environment_and_no_proxy_bypasses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "NETRC"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert env_proxy("https://hooks.example.com/x") == (None, None)
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pass@proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    proxy, auth = env_proxy("https://hooks.example.com/x")
    assert proxy == "http://proxy.example:3128"
    assert auth is not None and (auth.login, auth.password) == ("user", "pass")
    assert env_proxy("https://internal.example/hook") == (None, None)
    assert env_proxy("http://hooks.example.com/x") == (None, None)  # HTTPS_PROXY is for https:// only
