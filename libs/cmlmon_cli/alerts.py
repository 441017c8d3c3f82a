"""`cmlmon alerts ...` and `cmlmon silences ...`: every RPC of cml.monitor.v1.AlertService."""

from __future__ import annotations

import getpass
import socket
import time
from typing import Annotated

import typer

from cml.monitor.v1 import alert_pb2
from cmlmon_cli.context import OutputOption, clients
from cmlmon_cli.formatting import parse_duration
from cmlmon_cli.output import Format, note, print_message, print_messages
from cmlmon_cli.views import alert_columns, silence_columns

alerts_app = typer.Typer(help="The alerts the notifier holds.", no_args_is_help=True)
silences_app = typer.Typer(help="Silences: stop alert deliveries for a worker or a rule for a while.",
                           no_args_is_help=True)

STATES = ("firing", "resolved", "all")


def _complete_state(incomplete: str) -> list[str]:
    return [s for s in STATES if s.startswith(incomplete.lower())]


@alerts_app.command("list", epilog="Examples:\n\n  cmlmon alerts list\n\n"
                                   "  cmlmon alerts list --state all --worker ID -o json")
def list_alerts(
    ctx: typer.Context,
    state: Annotated[str, typer.Option(help="firing, resolved (still remembered) or all.",
                                       autocompletion=_complete_state)] = "firing",
    worker: Annotated[str, typer.Option(help="Only this worker's alerts (worker id).", show_default=False)] = "",
    rule: Annotated[str, typer.Option(help="Only this rule's alerts, e.g. cpu_high.", show_default=False)] = "",
    output: OutputOption = Format.table,
) -> None:
    """List alerts, firing ones by default."""
    state = state.lower()
    if state not in STATES:
        raise typer.BadParameter(f"{state!r} is not one of: {', '.join(STATES)}", param_hint="--state")
    request = alert_pb2.ListAlertsRequest(worker_id=worker, rule=rule, show_resolved=state != "firing")
    found = clients(ctx).alerts.list_alerts(request)
    if state == "resolved":
        found = [a for a in found if a.state == alert_pb2.ALERT_STATE_RESOLVED]
    print_messages("alerts", found, alert_columns(), output, empty="No alerts.")


def _caller() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@silences_app.command("create", epilog="Examples:\n\n  cmlmon silences create --worker ID --for 2h "
                                       "--comment \"kernel upgrade\"\n\n"
                                       "  cmlmon silences create --rule memory_high --for 30m --comment \"load test\"")
def create_silence(
    ctx: typer.Context,
    for_: Annotated[str, typer.Option("--for", metavar="DURATION", help="How long, e.g. 30m, 2h, 1d.",
                                      show_default=False)],
    worker: Annotated[str, typer.Option(help="Worker id to silence; every worker when not given.",
                                        show_default=False)] = "",
    rule: Annotated[str, typer.Option(help="Rule to silence, e.g. cpu_high; every rule when not given.",
                                      show_default=False)] = "",
    comment: Annotated[str, typer.Option(help="Why, for the people who read it.", show_default=False)] = "",
    created_by: Annotated[str, typer.Option(help="Who; user@host when not given.", show_default=False)] = "",
    output: OutputOption = Format.table,
) -> None:
    """Stop deliveries of a worker's alerts, a rule's, or one rule of one worker, for a while."""
    if not worker and not rule:
        raise typer.BadParameter("give --worker, --rule or both", param_hint="--worker/--rule")
    try:
        seconds = parse_duration(for_)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--for") from None
    request = alert_pb2.CreateSilenceRequest(worker_id=worker, rule=rule, comment=comment,
                                             created_by=created_by or _caller())
    request.end_time.FromNanoseconds(time.time_ns() + int(seconds * 1e9))
    print_message(clients(ctx).alerts.create_silence(request), silence_columns(), output)


@silences_app.command("list", epilog="Example:\n\n  cmlmon silences list -o yaml")
def list_silences(ctx: typer.Context, output: OutputOption = Format.table) -> None:
    """List the silences that have not ended."""
    print_messages("silences", clients(ctx).alerts.list_silences(), silence_columns(), output,
                   empty="No silences.")


@silences_app.command("delete", epilog="Example:\n\n  cmlmon silences delete 0f3c9b7e...")
def delete_silence(ctx: typer.Context,
                   silence_id: Annotated[str, typer.Argument(metavar="ID", help="Silence id.")]) -> None:
    """End a silence now (exit code 3 when there is none with that id)."""
    clients(ctx).alerts.delete_silence(silence_id)
    note(f"silence {silence_id} deleted")
