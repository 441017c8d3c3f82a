"""HTTP sinks: each turns an AlertView into one POST and an HTTP outcome into success or DeliveryFailed.

The POSTs go through one aiohttp session per notifier: a kept-alive connection per receiver, and about a third
of the CPU per request of httpx (which also yields to the event loop several times before the request is
written), so a transition reaches its receiver sooner while samples are being evaluated."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import httpx
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from cmlmon_core.logs import redact_url
from notifier.domain import payloads
from notifier.domain.payloads import AlertView
from notifier.domain.retry import parse_retry_after
from notifier.errors import DeliveryFailed

log = logging.getLogger(__name__)


class Sink(Protocol):
    name: str

    async def send(self, alert: AlertView) -> None: ...


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """One configured sink (from the environment or the YAML file)."""

    name: str
    kind: str  # log | webhook | slack | pagerduty | opsgenie | alertmanager
    url: str = ""
    secret: str = field(default="", repr=False)
    routing_key: str = field(default="", repr=False)
    api_key: str = field(default="", repr=False)  # Opsgenie's GenieKey
    timeout_seconds: float = 5.0
    resend_seconds: float = 60.0  # Alertmanager: how often a firing alert is re-sent


class LogSink:
    """One readable line per transition."""

    def __init__(self, name: str = "log") -> None:
        self.name = name

    async def send(self, alert: AlertView) -> None:
        value = f" value={alert.value:.1f} threshold={alert.threshold:g}" if (
            alert.value is not None and alert.threshold is not None) else ""
        log.warning("ALERT %s %s %s on %s (%s)%s: %s", alert.status.upper(), alert.severity, alert.rule,
                    alert.worker_name or alert.worker_id, alert.instance_id, value, alert.summary)


Request = Callable[[SinkSpec, AlertView], tuple[str, bytes, dict[str, str]]]
"""What one kind of HTTP sink POSTs for an alert: URL, body, extra headers."""


def http_session() -> aiohttp.ClientSession:
    """The notifier's HTTP client, as httpx's was: the CA bundle httpx trusts (certifi, or SSL_CERT_FILE /
    SSL_CERT_DIR), an idle connection kept for 5 s; proxies from the environment per sink (`env_proxy`). Open it
    inside the running event loop."""
    connector = aiohttp.TCPConnector(ssl=httpx.create_ssl_context(), keepalive_timeout=5.0)
    return aiohttp.ClientSession(connector=connector)


def env_proxy(url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for url (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), and its credentials. Looked
    up once per sink: aiohttp's trust_env would look again on every request, reading ~/.netrc in a thread, which
    cost a busy notifier several milliseconds per POST."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None
    return str(proxy), auth


class HttpSink:
    """POST the request of its kind as JSON with a timeout, and classify the response."""

    def __init__(self, spec: SinkSpec, client: aiohttp.ClientSession, request: Request) -> None:
        self.name = spec.name
        self.spec = spec
        self._client = client
        self._request = request
        self._timeout = aiohttp.ClientTimeout(total=spec.timeout_seconds)
        self._proxy, self._proxy_auth = env_proxy(spec.url)

    async def send(self, alert: AlertView) -> None:
        await self.post(*self._request(self.spec, alert))

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "cmlmon-notifier/0.1", **headers}
        try:
            async with self._client.post(url, data=body, headers=headers, timeout=self._timeout, proxy=self._proxy,
                                         proxy_auth=self._proxy_auth) as response:
                await response.read()  # read to the end: the connection goes back to the pool for the next POST
                code, answer = response.status, response.headers
        except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
            raise DeliveryFailed(f"timeout after {self.spec.timeout_seconds}s ({type(exc).__name__})") from exc
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(f"{type(exc).__name__} talking to {redact_url(url)}") from exc
        classify(code, answer)


def classify(code: int, headers: Mapping[str, str]) -> None:
    if 200 <= code < 300:
        return
    if code == 410:
        raise DeliveryFailed("410 Gone: endpoint disabled", retryable=False, gone=True)
    if code == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"), time.time())
        raise DeliveryFailed("429 Too Many Requests", retry_after=retry_after)
    if code >= 500 or code == 408:
        raise DeliveryFailed(f"HTTP {code}")
    raise DeliveryFailed(f"HTTP {code} (rejected)", retryable=False)


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def webhook_request(spec: SinkSpec, alert: AlertView) -> tuple[str, bytes, dict[str, str]]:
    """Generic JSON webhook, signed per Standard Webhooks when a whsec_ secret is configured."""
    body = _json(payloads.webhook_body(alert))
    headers = {"webhook-id": alert.transition_id}
    if spec.secret:
        headers = payloads.standard_webhook_headers(spec.secret, alert.transition_id, int(time.time()), body)
    return spec.url, body, headers


def slack_request(spec: SinkSpec, alert: AlertView) -> tuple[str, bytes, dict[str, str]]:
    return spec.url, _json(payloads.slack_body(alert)), {}


def pagerduty_request(spec: SinkSpec, alert: AlertView) -> tuple[str, bytes, dict[str, str]]:
    return spec.url, _json(payloads.pagerduty_body(alert, spec.routing_key)), {}


def opsgenie_request(spec: SinkSpec, alert: AlertView) -> tuple[str, bytes, dict[str, str]]:
    """Create on firing, close by alias on resolution (Opsgenie Alert API v2; both answer 202)."""
    base = spec.url.rstrip("/") + "/v2/alerts"
    headers = {"Authorization": f"GenieKey {spec.api_key}"}
    if alert.status == "firing":
        return base, _json(payloads.opsgenie_create_body(alert)), headers
    url = f"{base}/{quote(alert.alert_id, safe='')}/close?identifierType=alias"
    return url, _json(payloads.opsgenie_close_body(alert)), headers


# Like Prometheus: a firing alert's endsAt lies this many re-send periods ahead, so one or two lost re-sends do
# not resolve it, and a notifier that stopped re-sending lets it resolve within a few periods.
ALERTMANAGER_ENDS_AFTER_PERIODS = 4


def alertmanager_request(spec: SinkSpec, alert: AlertView) -> tuple[str, bytes, dict[str, str]]:
    return alertmanager_batch(spec, [alert], time.time())


def alertmanager_batch(spec: SinkSpec, alerts: list[AlertView], now: float) -> tuple[str, bytes, dict[str, str]]:
    url = spec.url.rstrip("/") + "/api/v2/alerts"
    ttl = ALERTMANAGER_ENDS_AFTER_PERIODS * spec.resend_seconds
    return url, _json([a for alert in alerts for a in payloads.alertmanager_body(alert, ttl, now)]), {}


_REQUESTS: dict[str, Request] = {"webhook": webhook_request, "slack": slack_request, "pagerduty": pagerduty_request,
                                 "opsgenie": opsgenie_request,
                                 "alertmanager": alertmanager_request}


def build_sink(spec: SinkSpec, client: aiohttp.ClientSession) -> Sink:
    if spec.kind == "log":
        return LogSink(spec.name)
    return HttpSink(spec, client, _REQUESTS[spec.kind])


class AlertmanagerResend:
    """Re-sends firing alerts to one Alertmanager, many per POST (Alertmanager takes a list)."""

    def __init__(self, spec: SinkSpec, client: aiohttp.ClientSession, batch: int = 200) -> None:
        self.spec = spec
        self._sink = HttpSink(spec, client, alertmanager_request)
        self._batch = batch

    async def resend(self, alerts: list[AlertView]) -> None:
        now = time.time()
        for i in range(0, len(alerts), self._batch):
            await self._sink.post(*alertmanager_batch(self.spec, alerts[i:i + self._batch], now))
