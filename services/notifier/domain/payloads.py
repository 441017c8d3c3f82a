"""What each sink sends, built from one alert transition. Pure: the HTTP adapters only post these."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from notifier.domain.model import METRICS, Rule


@dataclass(frozen=True, slots=True)
class AlertView:
    """One transition as delivered: the fields of the cml.monitor.v1.Alert message."""

    alert_id: str
    transition_id: str
    status: str  # "firing" | "resolved"
    worker_id: str
    worker_name: str
    instance_id: str
    region: str
    rule: str
    severity: str
    value: float | None
    threshold: float | None
    summary: str
    start_time: float | None
    end_time: float | None
    silenced: bool = False

    @property
    def metric(self) -> str:
        try:
            return METRICS.get(Rule(self.rule), self.rule)
        except ValueError:
            return self.rule


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def webhook_body(alert: AlertView) -> dict[str, Any]:
    """Generic webhook JSON. The flat fields (status, worker_id, worker_name, instance_id, metric, value,
    threshold) are the walking skeleton's shape and stay."""
    return {
        "status": alert.status,
        "alert_id": alert.alert_id,
        "transition_id": alert.transition_id,
        "rule": alert.rule,
        "severity": alert.severity,
        "summary": alert.summary,
        "metric": alert.metric,
        "value": alert.value,
        "threshold": alert.threshold,
        "worker_id": alert.worker_id,
        "worker_name": alert.worker_name,
        "instance_id": alert.instance_id,
        "worker": {"id": alert.worker_id, "name": alert.worker_name, "instance_id": alert.instance_id,
                   "region": alert.region},
        "starts_at": iso(alert.start_time),
        "ends_at": iso(alert.end_time),
    }


def slack_body(alert: AlertView) -> dict[str, Any]:
    icon = ":rotating_light:" if alert.status == "firing" else ":white_check_mark:"
    head = f"{icon} [{alert.status.upper()}] {alert.severity.upper()} {alert.rule}"
    who = f"{alert.worker_name or alert.worker_id} ({alert.instance_id}, {alert.region})"
    lines = [f"*{head}* on {who}", alert.summary]
    if alert.value is not None and alert.threshold is not None:
        lines.append(f"{alert.metric}: {alert.value:.1f} (threshold {alert.threshold:g})")
    return {"text": "\n".join(line for line in lines if line)}


_PD_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}


def pagerduty_body(alert: AlertView, routing_key: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger" if alert.status == "firing" else "resolve",
        "dedup_key": f"cmlmon/{alert.alert_id}",
    }
    if alert.status == "firing":
        body["payload"] = {
            "summary": (alert.summary or f"{alert.rule} on {alert.worker_id}")[:1024],
            "source": alert.instance_id or alert.worker_id,
            "severity": _PD_SEVERITY.get(alert.severity, "error"),
            "timestamp": iso(alert.start_time),
            "component": alert.worker_name or alert.worker_id,
            "group": alert.region,
            "class": alert.rule,
            "custom_details": {"value": alert.value, "threshold": alert.threshold, "worker_id": alert.worker_id},
        }
    return body


# Opsgenie priorities run P1 (highest) to P5; the three severities take the top, middle and bottom.
_OPSGENIE_PRIORITY = {"critical": "P1", "warning": "P3", "info": "P5"}


def opsgenie_create_body(alert: AlertView) -> dict[str, Any]:
    """Opsgenie Alert API v2 create request. The alias is the alert id, so the close finds the same alert and
    a repeated create is deduplicated by Opsgenie. Field limits are Opsgenie's (message 130, details 8000)."""
    who = alert.worker_name or alert.worker_id
    details = {"worker_id": alert.worker_id, "worker_name": alert.worker_name, "instance_id": alert.instance_id,
               "region": alert.region, "rule": alert.rule, "severity": alert.severity,
               "starts_at": iso(alert.start_time) or ""}
    if alert.value is not None:
        details["value"] = f"{alert.value:g}"
    if alert.threshold is not None:
        details["threshold"] = f"{alert.threshold:g}"
    return {
        "message": f"[{alert.severity.upper()}] {alert.rule} on {who}"[:130],
        "alias": alert.alert_id,
        "description": (alert.summary or f"{alert.rule} on {who}")[:15000],
        "priority": _OPSGENIE_PRIORITY.get(alert.severity, "P3"),
        "source": "cmlmon",
        "entity": (alert.instance_id or alert.worker_id)[:512],
        "tags": [t for t in ("cmlmon", alert.rule, alert.severity, alert.region) if t],
        "details": {k: v for k, v in details.items() if v},
    }


def opsgenie_close_body(alert: AlertView) -> dict[str, Any]:
    """Opsgenie Alert API v2 close request (the alias goes in the URL)."""
    return {"source": "cmlmon", "note": f"resolved at {iso(alert.end_time) or 'an unknown time'}"}


def alertmanager_body(alert: AlertView, firing_ttl_seconds: float, now: float) -> list[dict[str, Any]]:
    """Alertmanager v2 postable alert. A firing alert gets endsAt = now + ttl (it is re-sent well within the
    ttl while it fires); a resolved one ends at its end time."""
    labels = {"alertname": alert.rule, "worker_id": alert.worker_id, "severity": alert.severity,
              "instance_id": alert.instance_id, "region": alert.region, "worker_name": alert.worker_name,
              "service": "cmlmon"}
    annotations = {"summary": alert.summary}
    if alert.value is not None:
        annotations["value"] = f"{alert.value:g}"
    if alert.threshold is not None:
        annotations["threshold"] = f"{alert.threshold:g}"
    ends = alert.end_time if alert.status == "resolved" else now + firing_ttl_seconds
    return [{
        "labels": {k: v for k, v in labels.items() if v},
        "annotations": annotations,
        "startsAt": iso(alert.start_time or now),
        "endsAt": iso(ends),
    }]


def standard_webhook_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Standard Webhooks signature: v1,base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")) where the key is
    the base64 part of a whsec_ secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{signature}"}
