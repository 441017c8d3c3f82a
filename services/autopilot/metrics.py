"""The autopilot's Prometheus metrics: what each controller reports, and what auto-stop saved."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CML_REACHABLE = Gauge("autopilot_cml_reachable", "1 when the worker's CML controller answered the last probe",
                      ["worker_id"])
CML_PROBE_TIME = Gauge("autopilot_cml_probe_timestamp_seconds",
                       "when this replica last probed the worker's controller (Unix time): replicas share the "
                       "workers, so the one with the newest probe speaks for a worker", ["worker_id"])
CML_HEALTHY = Gauge("autopilot_cml_healthy", "1 when the controller's system health is valid", ["worker_id"])
CML_LICENCE_IN_COMPLIANCE = Gauge("autopilot_cml_licence_in_compliance",
                                  "1 when the controller's licence authorization is IN_COMPLIANCE", ["worker_id"])
CML_LICENCE_REGISTERED = Gauge("autopilot_cml_licence_registered",
                               "1 when the controller is registered with Smart Licensing", ["worker_id"])
CML_LABS = Gauge("autopilot_cml_labs", "labs on the controller", ["worker_id"])
CML_RUNNING_NODES = Gauge("autopilot_cml_running_nodes", "lab nodes started, queued or booted", ["worker_id"])
CML_VERSION = Gauge("autopilot_cml_version_info", "CML version of the controller (value 1)",
                    ["worker_id", "version"])
IDLE_SECONDS = Gauge("autopilot_idle_seconds", "length of the worker's current idle run", ["worker_id"])
DECISIONS = Counter("autopilot_decisions_total", "decisions made", ["action", "mode"])
STOPPED_HOURS = Counter("autopilot_stopped_hours_total", "hours a worker stayed stopped after an auto-stop",
                        ["worker_id"])
SAVED_USD = Counter("autopilot_saved_usd_total", "USD not spent while a worker stayed stopped after an auto-stop",
                    ["worker_id"])
