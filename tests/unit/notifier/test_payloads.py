from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace

import pytest

from notifier.adapters.sinks import LogSink
from notifier.domain import payloads
from notifier.domain.model import AlertState
from notifier.domain.payloads import AlertView
from notifier.domain.retry import RetryPolicy, parse_retry_after
from notifier.domain.silences import Silence, is_silenced, validate_silence

FIRING = AlertView(alert_id="w1.cpu_high", transition_id="w1.cpu_high.3.firing", status="firing", worker_id="w1",
                   worker_name="cml-1", instance_id="i-0abc", region="us-east-1", rule="cpu_high", severity="warning",
                   value=97.5, threshold=90.0, summary="hot", start_time=1_700_000_000.0, end_time=None)


def test_webhook_body_keeps_the_skeleton_shape() -> None:
    body = payloads.webhook_body(FIRING)
    assert body["status"] == "firing" and body["metric"] == "cpu"
    assert (body["worker_id"], body["worker_name"], body["instance_id"]) == ("w1", "cml-1", "i-0abc")
    assert body["worker"] == {"id": "w1", "name": "cml-1", "instance_id": "i-0abc", "region": "us-east-1"}
    assert (body["value"], body["threshold"]) == (97.5, 90.0)
    assert body["starts_at"] == "2023-11-14T22:13:20Z" and body["ends_at"] is None


def test_standard_webhooks_signature_matches_the_spec_example() -> None:
    # Example from the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = payloads.standard_webhook_headers(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                                                b'{"test": 2432232314}')
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}', hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()


def test_pagerduty_trigger_and_resolve_share_a_dedup_key() -> None:
    trigger = payloads.pagerduty_body(FIRING, "KEY")
    resolved = payloads.pagerduty_body(_with(FIRING, status="resolved"), "KEY")
    assert trigger["event_action"] == "trigger" and resolved["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolved["dedup_key"] == "cmlmon/w1.cpu_high"
    assert trigger["payload"]["severity"] == "warning" and "payload" not in resolved


def _with(view: AlertView, **changes: object) -> AlertView:
    return replace(view, **changes)  # type: ignore[arg-type]


def test_alertmanager_firing_and_resolved() -> None:
    [firing] = payloads.alertmanager_body(FIRING, firing_ttl_seconds=3600, now=1_700_000_100.0)
    assert firing["labels"]["alertname"] == "cpu_high" and firing["labels"]["worker_id"] == "w1"
    assert firing["startsAt"] == "2023-11-14T22:13:20Z" and firing["endsAt"] == "2023-11-14T23:15:00Z"
    [resolved] = payloads.alertmanager_body(_with(FIRING, status="resolved", end_time=1_700_000_060.0), 3600,
                                            now=1_700_000_100.0)
    assert resolved["endsAt"] == "2023-11-14T22:14:20Z"


def test_slack_text_reads_at_a_glance() -> None:
    text = payloads.slack_body(FIRING)["text"]
    assert "FIRING" in text and "cml-1" in text and "97.5" in text


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=5, initial_seconds=1, max_seconds=8)
    assert [policy.delay(a, 0.0) for a in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 4]
    assert [policy.delay(a, 0.999) for a in (1, 2, 5)] == pytest.approx([0.9995, 1.999, 7.996])
    assert policy.delay(1, 0.5, retry_after=3) == 3
    assert policy.delay(1, 0.5, retry_after=300) == 8


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7", 0) == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == pytest.approx(10)
    assert parse_retry_after("soon", 0) is None and parse_retry_after(None, 0) is None


def test_silences_match_and_expire() -> None:
    s = Silence(silence_id="s", worker_id="w1", rule="", end_time=100.0)
    state = AlertState(worker_id="w1", rule="cpu_high")
    assert is_silenced([s], state, 99.0) and not is_silenced([s], state, 100.0)
    assert not is_silenced([s], AlertState(worker_id="w2", rule="cpu_high"), 50.0)
    by_rule = Silence(silence_id="r", worker_id="", rule="silent", end_time=100.0)
    assert by_rule.matches("any", "silent") and not by_rule.matches("any", "cpu_high")
    assert validate_silence("", "", 200, 100) and validate_silence("w", "", 50, 100)
    assert validate_silence("w", "", 200, 100) is None
    assert Silence.from_json(s.to_json()) == s


async def test_log_sink_writes_one_readable_line_per_transition(caplog: pytest.LogCaptureFixture) -> None:
    sink = LogSink()
    with caplog.at_level("INFO", logger="notifier.adapters.sinks"):
        await sink.send(FIRING)
        await sink.send(replace(FIRING, status="resolved", value=40.0, summary="cooled down"))
    lines = [r.getMessage() for r in caplog.records if r.name == "notifier.adapters.sinks"]
    assert lines == [
        "ALERT FIRING warning cpu_high on cml-1 (i-0abc) value=97.5 threshold=90: hot",
        "ALERT RESOLVED warning cpu_high on cml-1 (i-0abc) value=40.0 threshold=90: cooled down",
    ]


def test_opsgenie_create_uses_the_alert_id_as_alias_and_priority_from_severity() -> None:
    body = payloads.opsgenie_create_body(FIRING)
    assert body["alias"] == "w1.cpu_high" and body["priority"] == "P3"
    assert body["message"] == "[WARNING] cpu_high on cml-1" and body["description"] == "hot"
    assert body["details"] == {"worker_id": "w1", "worker_name": "cml-1", "instance_id": "i-0abc",
                               "region": "us-east-1", "rule": "cpu_high", "severity": "warning",
                               "starts_at": "2023-11-14T22:13:20Z", "value": "97.5", "threshold": "90"}
    assert [payloads.opsgenie_create_body(_with(FIRING, severity=s))["priority"]
            for s in ("critical", "warning", "info")] == ["P1", "P3", "P5"]
    assert len(payloads.opsgenie_create_body(_with(FIRING, worker_name="x" * 300))["message"]) == 130
