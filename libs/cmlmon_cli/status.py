"""`cmlmon status`: one screen saying whether the fleet and the pipeline are fine."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from cml.monitor.v1 import alert_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_cli.client import Clients, Endpoint
from cmlmon_cli.context import OutputOption, clients
from cmlmon_cli.errors import FAILURE, OK, CliError
from cmlmon_cli.formatting import human_duration
from cmlmon_cli.output import Format, console, emit_document, print_renderable
from cmlmon_cli.summary import STALE_INTERVALS, FleetSummary, summarize

EPILOG = ("Exit code 0 when both services serve and every worker's samples are fresh, 1 otherwise (4 when "
          "the caller is not allowed to read). Firing alerts are shown, not judged.\n\n"
          "Examples:\n\n  cmlmon status\n\n  cmlmon status -o json | jq .problems")


def _health(endpoint: Endpoint) -> dict[str, str]:
    return {"address": endpoint.address, "health": endpoint.health()}


def _gather(c: Clients) -> tuple[dict[str, dict[str, str]], FleetSummary, list[str], int]:
    """Health, the summary, the problems found (empty: all fine) and the exit code they mean. A service that
    does not serve is one problem; its data is not asked for."""
    services = {"registry": _health(c.registry_endpoint), "notifier": _health(c.notifier_endpoint)}
    problems = [f"{name}: {s['health']}" for name, s in services.items() if s["health"] != "SERVING"]
    code = OK
    workers: list[worker_pb2.Worker] = []
    alerts: list[alert_pb2.Alert] = []
    try:
        if services["registry"]["health"] == "SERVING":
            workers = c.registry.list_workers(rs.ListWorkersRequest())
        if services["notifier"]["health"] == "SERVING":
            alerts = c.alerts.list_alerts(alert_pb2.ListAlertsRequest())
    except CliError as exc:
        problems.append(exc.message)
        code = exc.exit_code
    summary = summarize(workers, alerts, time.time())
    if summary.samples.stale:
        shown = ", ".join(summary.samples.stale[:5]) + (" ..." if len(summary.samples.stale) > 5 else "")
        problems.append(f"{len(summary.samples.stale)} worker(s) without a sample for more than {STALE_INTERVALS} "
                        f"poll intervals: {shown}")
    return services, summary, problems, code or (FAILURE if problems else OK)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _region_table(summary: FleetSummary) -> Table:
    statuses = sorted({s for per in summary.by_region.values() for s in per})
    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), header_style="bold")
    for header in ("REGION", "TOTAL", *statuses):
        table.add_column(header, justify="left" if header == "REGION" else "right")
    for region, per in summary.by_region.items():
        table.add_row(region, str(sum(per.values())), *(str(per.get(s, 0)) for s in statuses))
    return table


def _render(services: dict[str, dict[str, str]], summary: FleetSummary, problems: list[str]) -> Group:
    parts: list[Any] = []
    for name, s in services.items():
        style = "green" if s["health"] == "SERVING" else "red"
        parts.append(Text.assemble(f"{name:<10}{s['address']:<24}", (s["health"], style)))
    parts += [Text(""), Text(f"Workers: {summary.total} ({_counts(summary.by_status)})")]
    if summary.by_region:
        parts.append(_region_table(summary))
    silenced = f", {summary.silenced} silenced" if summary.silenced else ""
    parts += [Text(""), Text(f"Alerts firing: {summary.firing} ({_counts(summary.by_severity)}){silenced}")]
    samples = summary.samples
    oldest = "no sample yet" if samples.oldest_age is None else (
        f"the oldest worker's newest is {human_duration(samples.oldest_age)} old "
        f"({samples.oldest_name or samples.oldest_id})")
    parts.append(Text(f"Samples: {oldest}; {len(samples.stale)} stale, {samples.never_seen} never observed"))
    verdict = Text("\nAll fine." if not problems else "\nNot fine:", style="bold red" if problems else "bold green")
    parts += [verdict, *(Text(f"  - {p}") for p in problems)]
    return Group(*parts)


def status(ctx: typer.Context, output: OutputOption = Format.table) -> None:
    """Is everything fine? Services' health, workers, firing alerts, sample age.

    Both services' health (grpc.health.v1), the workers by status and region, the firing alerts by severity,
    and how old the newest sample of the least recently observed worker is."""
    services, summary, problems, code = _gather(clients(ctx))
    if output in (Format.json, Format.yaml):
        emit_document({"services": services, **asdict(summary), "problems": problems, "ok": not problems}, output)
    else:
        print_renderable(console(), _render(services, summary, problems))
    raise typer.Exit(code)
