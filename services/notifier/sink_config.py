"""Which sinks run: the log sink always, then the environment's (WORKER_NOTIFICATION_WEBHOOKS, WEBHOOK_SECRET,
SLACK_WEBHOOK_URL, PAGERDUTY_ROUTING_KEY, OPSGENIE_API_KEY, ALERTMANAGER_URL), then those of NOTIFIER_SINKS_FILE (YAML):

    sinks:
      - {name: ops, type: webhook, url: https://example.com/hook, secret: whsec_...}
      - {name: chat, type: slack, url: https://hooks.slack.com/services/...}
      - {name: pager, type: pagerduty, routing_key: R0UT1NGKEY}
      - {name: genie, type: opsgenie, api_key: 0123-abcd, region: eu}   # or url: https://proxy.example
      - {name: am, type: alertmanager, url: http://127.0.0.1:9093, resend_seconds: 60}

Each sink's name is part of its durable consumer and dead-letter subject, so it must stay stable."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

from notifier.adapters.sinks import SinkSpec
from notifier.errors import SinkConfigError
from notifier.settings import NotifierSettings

KINDS = ("log", "webhook", "slack", "pagerduty", "opsgenie", "alertmanager")
OPSGENIE_URLS = {"us": "https://api.opsgenie.com", "eu": "https://api.eu.opsgenie.com"}
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def url_sink_name(kind: str, url: str) -> str:
    """A stable name that does not reveal the URL (which may carry a token)."""
    return f"{kind}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def sink_specs(settings: NotifierSettings) -> list[SinkSpec]:
    timeout = settings.delivery_timeout_seconds
    check_environment(settings)
    specs = [SinkSpec(name="log", kind="log")]
    for url in settings.webhook_urls:
        specs.append(SinkSpec(name=url_sink_name("webhook", url), kind="webhook", url=url,
                              secret=settings.webhook_secret, timeout_seconds=timeout))
    if settings.slack_webhook_url:
        specs.append(SinkSpec(name="slack", kind="slack", url=settings.slack_webhook_url, timeout_seconds=timeout))
    if settings.pagerduty_routing_key:
        specs.append(SinkSpec(name="pagerduty", kind="pagerduty", url=settings.pagerduty_url,
                              routing_key=settings.pagerduty_routing_key, timeout_seconds=timeout))
    if settings.opsgenie_api_key.get_secret_value():
        specs.append(SinkSpec(name="opsgenie", kind="opsgenie",
                              url=settings.opsgenie_url or OPSGENIE_URLS[settings.opsgenie_region],
                              api_key=settings.opsgenie_api_key.get_secret_value(), timeout_seconds=timeout))
    if settings.alertmanager_url:
        specs.append(SinkSpec(name="alertmanager", kind="alertmanager", url=settings.alertmanager_url,
                              timeout_seconds=timeout, resend_seconds=settings.alertmanager_resend_seconds))
    if settings.notifier_sinks_file:
        specs += load_sinks_file(Path(settings.notifier_sinks_file), settings)
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SinkConfigError(f"sink names must be unique: {', '.join(dupes)}")
    return specs


def check_environment(settings: NotifierSettings) -> None:
    """Refuse bad sink variables with a message that names them and never shows their values."""
    if settings.webhook_secret and not settings.webhook_secret.startswith("whsec_"):
        raise SinkConfigError("WEBHOOK_SECRET must start with 'whsec_' (a Standard Webhooks secret)")
    if settings.webhook_secret:
        try:
            base64.b64decode(settings.webhook_secret.removeprefix("whsec_"), validate=True)
        except ValueError:
            raise SinkConfigError("WEBHOOK_SECRET: the part after 'whsec_' must be base64") from None
    urls = {"WORKER_NOTIFICATION_WEBHOOKS": settings.webhook_urls, "SLACK_WEBHOOK_URL": [settings.slack_webhook_url],
            "PAGERDUTY_URL": [settings.pagerduty_url], "OPSGENIE_URL": [settings.opsgenie_url],
            "ALERTMANAGER_URL": [settings.alertmanager_url]}
    for name, values in urls.items():
        for i, url in enumerate(v for v in values if v):
            if not url.startswith(("http://", "https://")):
                raise SinkConfigError(f"{name}: entry {i + 1} is not an http:// or https:// URL")


def load_sinks_file(path: Path, settings: NotifierSettings) -> list[SinkSpec]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SinkConfigError(f"NOTIFIER_SINKS_FILE {path}: {exc}") from exc
    entries = (data or {}).get("sinks", []) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise SinkConfigError(f"NOTIFIER_SINKS_FILE {path}: expected a mapping with a 'sinks' list")
    return [parse_sink(i, entry, settings) for i, entry in enumerate(entries)]


def parse_sink(index: int, entry: Any, settings: NotifierSettings) -> SinkSpec:
    where = f"NOTIFIER_SINKS_FILE sinks[{index}]"
    if not isinstance(entry, dict):
        raise SinkConfigError(f"{where}: expected a mapping")
    kind = str(entry.get("type", ""))
    if kind not in KINDS:
        raise SinkConfigError(f"{where}: type must be one of {', '.join(KINDS)}")
    url = str(entry.get("url", "") or _default_url(where, kind, entry))
    if kind != "log" and not url.startswith(("http://", "https://")):
        raise SinkConfigError(f"{where}: url must be an http(s) URL")
    secret = str(entry.get("secret", ""))
    if secret and not secret.startswith("whsec_"):
        raise SinkConfigError(f"{where}: secret must start with whsec_")
    try:
        base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        raise SinkConfigError(f"{where}: the part of secret after whsec_ must be base64") from None
    routing_key = str(entry.get("routing_key", ""))
    if kind == "pagerduty" and not routing_key:
        raise SinkConfigError(f"{where}: pagerduty needs routing_key")
    api_key = str(entry.get("api_key", ""))
    if kind == "opsgenie" and not api_key:
        raise SinkConfigError(f"{where}: opsgenie needs api_key")
    name = str(entry.get("name", "") or url_sink_name(kind, url))
    if not _NAME.match(name):
        raise SinkConfigError(f"{where}: name must be 1-40 of letters, digits, '_' or '-'")
    try:
        timeout = float(entry.get("timeout_seconds", settings.delivery_timeout_seconds))
        resend = float(entry.get("resend_seconds", settings.alertmanager_resend_seconds))
    except (TypeError, ValueError):
        raise SinkConfigError(f"{where}: timeout_seconds and resend_seconds must be numbers") from None
    if not 1 <= resend <= 3600:
        raise SinkConfigError(f"{where}: resend_seconds must be between 1 and 3600")
    return SinkSpec(name=name, kind=kind, url=url, secret=secret, routing_key=routing_key, api_key=api_key,
                    timeout_seconds=timeout, resend_seconds=resend)


def _default_url(where: str, kind: str, entry: dict[str, Any]) -> str:
    if kind == "pagerduty":
        return "https://events.pagerduty.com/v2/enqueue"
    if kind == "opsgenie":
        region = str(entry.get("region", "us"))
        if region not in OPSGENIE_URLS:
            raise SinkConfigError(f"{where}: region must be one of {', '.join(OPSGENIE_URLS)}")
        return OPSGENIE_URLS[region]
    return ""
