"""Prometheus metrics of the notifier itself (alerts and deliveries), on METRICS_PORT."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge

from notifier.domain.model import Rule, Severity

SAMPLES = Counter("cmlmon_notifier_samples_evaluated_total", "Metric samples evaluated")
EVENTS = Counter("cmlmon_notifier_worker_events_total", "Worker lifecycle events evaluated")
UNDECODABLE = Counter("cmlmon_notifier_undecodable_messages_total", "Messages terminated as undecodable",
                      ["stream"])
TRANSITIONS = Counter("cmlmon_notifier_transitions_total", "Alert transitions published", ["rule", "kind"])
CONFLICTS = Counter("cmlmon_notifier_state_conflicts_total", "KV compare-and-set conflicts retried")
DELIVERIES = Counter("cmlmon_notifier_deliveries_total", "Delivery outcomes per sink", ["sink", "outcome"])
ATTEMPTS = Counter("cmlmon_notifier_delivery_attempts_total", "HTTP delivery attempts per sink", ["sink"])
FIRING = Gauge("cmlmon_notifier_alerts_firing", "Alerts firing, as this replica's cache sees them")
FIRING_BY_RULE = Gauge("cmlmon_notifier_alerts_firing_by_rule", "Alerts firing by rule and severity, as this "
                       "replica's cache sees them", ["rule", "severity"])
SILENCES = Gauge("cmlmon_notifier_silences_active", "Silences in force now")


def set_firing(counts: Mapping[tuple[str, str], int]) -> None:
    """Every rule and severity gets a value (0 when none fires), so a series never goes stale."""
    for rule in Rule:
        for severity in Severity:
            FIRING_BY_RULE.labels(rule.value, severity.value).set(counts.get((rule.value, severity.value), 0))
