"""`cmlmon workers ...`: every RPC of cml.monitor.v1.WorkerRegistryService."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from typing import Annotated

import typer
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import worker_pb2
from cmlmon_cli.client import Registry
from cmlmon_cli.context import OutputOption, clients
from cmlmon_cli.errors import FAILURE, USAGE, CliError
from cmlmon_cli.formatting import parse_duration, parse_enum, parse_tags, parse_time, short_name, short_names
from cmlmon_cli.output import Format, note, print_message, print_messages
from cmlmon_cli.views import bucket_columns, sample_columns, worker_columns
from cmlmon_cli.watching import wait_for, watch

app = typer.Typer(help="List, inspect, create, import, start, stop, reboot, terminate and watch workers, and "
                       "read a worker's metric history.",
                  no_args_is_help=True)

STATUSES = short_names(worker_pb2.WorkerStatus)
DEFAULT_SINCE = "1h"
TagOption = Annotated[list[str] | None, typer.Option(
    "--tag", metavar="KEY=VALUE", help="A tag; repeat for several.", show_default=False)]
RegionOption = Annotated[str, typer.Option(metavar="REGION", help="Only this AWS region, e.g. us-east-1.",
                                           show_default=False)]
IdsArgument = Annotated[list[str], typer.Argument(metavar="ID", help="Worker ids.", show_default=False)]
WaitOption = Annotated[bool, typer.Option(help="Follow the worker until the status is reached (WatchWorkers).")]
TimeoutOption = Annotated[str, typer.Option("--timeout", metavar="DURATION",
                                            help="How long --wait waits, e.g. 90s, 5m, 1h.")]


def _tags(values: list[str] | None) -> dict[str, str]:
    try:
        return parse_tags(values or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tag") from None


def _statuses(values: list[str] | None) -> list[str]:
    """Full enum names (WORKER_STATUS_RUNNING), which the request takes as well as numbers."""
    try:
        return [worker_pb2.WorkerStatus.Name(parse_enum(worker_pb2.WorkerStatus, v)) for v in values or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--status") from None


def _duration(value: str, flag: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from None


def _complete_status(incomplete: str) -> list[str]:
    return [s for s in STATUSES if s.startswith(incomplete.lower())]


@app.command("list", epilog="Examples:\n\n  cmlmon workers list --region us-east-1 --status running\n\n"
                            "  cmlmon workers list --tag team=lab --all -o json")
def list_workers(
    ctx: typer.Context,
    region: RegionOption = "",
    status: Annotated[list[str] | None, typer.Option(
        metavar="STATUS", help=f"Only workers in this status ({', '.join(STATUSES)}); repeat for several.",
        autocompletion=_complete_status, show_default=False)] = None,
    tag: TagOption = None,
    name_prefix: Annotated[str, typer.Option(help="Only names starting with this.", show_default=False)] = "",
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include terminated workers.")] = False,
    output: OutputOption = Format.table,
) -> None:
    """List workers, every page of them, ordered by id."""
    request = rs.ListWorkersRequest(region=region, statuses=_statuses(status), tags=_tags(tag),
                                    name_prefix=name_prefix, show_terminated=all_)
    workers = clients(ctx).registry.list_workers(request)
    print_messages("workers", workers, worker_columns(), output, empty="No workers found.")


@app.command("get", epilog="Example:\n\n  cmlmon workers get 3f9c2a1b-... -o yaml")
def get_worker(ctx: typer.Context, worker_id: Annotated[str, typer.Argument(metavar="ID", help="Worker id.")],
               output: OutputOption = Format.table) -> None:
    """Show one worker, with what its CML controller reported last (exit code 3 when there is none with that
    id)."""
    print_message(clients(ctx).registry.get(worker_id), worker_columns(controller_in_table=True), output)


@app.command("create", epilog="Example:\n\n  cmlmon workers create --name cml-lab-1 --region us-east-1 "
                              "--instance-type c5.metal --ami ami-0123456789abcdef0 --tag team=lab")
def create_worker(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Worker name and the instance's Name tag.", show_default=False)],
    region: Annotated[str, typer.Option(help="AWS region to launch in.", show_default=False)],
    instance_type: Annotated[str, typer.Option(help="EC2 instance type, e.g. c5.metal.", show_default=False)],
    ami: Annotated[str, typer.Option(help="AMI to launch (ami-...).", show_default=False)],
    subnet: Annotated[str, typer.Option(help="Subnet id; the default subnet when not given.",
                                        show_default=False)] = "",
    security_group: Annotated[list[str] | None, typer.Option(
        metavar="SG_ID", help="Security group id; repeat for several.", show_default=False)] = None,
    key_name: Annotated[str, typer.Option(help="EC2 key pair name.", show_default=False)] = "",
    tag: TagOption = None,
    poll_interval: Annotated[str, typer.Option(
        help="Time between polls, e.g. 60s or 5m; the registry's default when not given.", show_default=False)] = "",
    request_id: Annotated[str, typer.Option(
        help="Idempotency key: retrying with the same one never launches a second instance. Generated and "
             "printed when not given.", show_default=False)] = "",
    output: OutputOption = Format.table,
) -> None:
    """Launch an EC2 instance and register it as a worker."""
    interval = int(_duration(poll_interval, "--poll-interval")) if poll_interval else 0
    if not request_id:
        request_id = str(uuid.uuid4())
        note(f"request id: {request_id} (to retry safely: --request-id {request_id})")
    request = rs.CreateWorkerRequest(request_id=request_id, name=name, region=region, instance_type=instance_type,
                                     ami_id=ami, subnet_id=subnet, security_group_ids=security_group or [],
                                     key_name=key_name, tags=_tags(tag), poll_interval_seconds=interval)
    print_message(clients(ctx).registry.create(request), worker_columns(), output)


@app.command("import", epilog="Example:\n\n  cmlmon workers import --region us-east-1 --instance-id "
                              "i-0123456789abcdef0 --name cml-old-1")
def import_worker(
    ctx: typer.Context,
    region: Annotated[str, typer.Option(help="AWS region of the instance.", show_default=False)],
    instance_id: Annotated[str, typer.Option(help="EC2 instance id (i-...).", show_default=False)],
    name: Annotated[str, typer.Option(help="Worker name; the instance's Name tag when not given.",
                                      show_default=False)] = "",
    tag: TagOption = None,
    poll_interval: Annotated[str, typer.Option(
        help="Time between polls, e.g. 60s or 5m; the registry's default when not given.", show_default=False)] = "",
    output: OutputOption = Format.table,
) -> None:
    """Adopt an existing EC2 instance as a worker."""
    interval = int(_duration(poll_interval, "--poll-interval")) if poll_interval else 0
    request = rs.ImportWorkerRequest(region=region, instance_id=instance_id, name=name, tags=_tags(tag),
                                     poll_interval_seconds=interval)
    print_message(clients(ctx).registry.import_(request), worker_columns(), output)


def _change(ctx: typer.Context, ids: list[str], action: Callable[[Registry, str], worker_pb2.Worker],
            output: Format, until: int | None = None, timeout: str = "5m") -> None:
    """Apply one call to each worker (start, stop, reboot, terminate): a failure is reported and the others still
    go ahead. With until (--wait), the workers that changed are then followed to that status for at most
    timeout. Exit code of the first failure."""
    limit = _duration(timeout, "--timeout")
    registry = clients(ctx).registry
    done: list[worker_pb2.Worker] = []
    failure: CliError | None = None
    for worker_id in ids:
        try:
            done.append(action(registry, worker_id))
        except CliError as exc:
            sys.stderr.write(f"error: {worker_id}: {exc.message}\n")
            failure = failure or exc
    if until is not None and done:
        note(f"waiting up to {timeout} for {len(done)} worker(s) to be "
             f"{short_name(worker_pb2.WorkerStatus, until)}...")
        done = wait_for(registry, [w.id for w in done], until, limit)
    if done:
        print_messages("workers", done, worker_columns(), output)
    if failure is not None:
        raise typer.Exit(failure.exit_code)


@app.command("start", epilog="Example:\n\n  cmlmon workers start ID1 ID2 --wait --timeout 10m")
def start_workers(ctx: typer.Context, ids: IdsArgument, wait: WaitOption = False, timeout: TimeoutOption = "5m",
                  output: OutputOption = Format.table) -> None:
    """Start stopped workers (--wait: until RUNNING)."""
    _change(ctx, ids, Registry.start, output, worker_pb2.WORKER_STATUS_RUNNING if wait else None, timeout)


@app.command("stop", epilog="Example:\n\n  cmlmon workers stop ID --wait")
def stop_workers(ctx: typer.Context, ids: IdsArgument, wait: WaitOption = False, timeout: TimeoutOption = "5m",
                 output: OutputOption = Format.table) -> None:
    """Stop running workers (--wait: until STOPPED)."""
    _change(ctx, ids, Registry.stop, output, worker_pb2.WORKER_STATUS_STOPPED if wait else None, timeout)


@app.command("reboot", epilog="Example:\n\n  cmlmon workers reboot ID1 ID2")
def reboot_workers(ctx: typer.Context, ids: IdsArgument, output: OutputOption = Format.table) -> None:
    """Reboot running workers' instances (EC2 RebootInstances; operator role). A worker that is not RUNNING is
    refused (FAILED_PRECONDITION) and the others still reboot. The recorded status stays RUNNING, so there is no
    --wait."""
    _change(ctx, ids, Registry.reboot, output)


@app.command("terminate", epilog="Example:\n\n  cmlmon workers terminate ID --yes --wait")
def terminate_workers(
    ctx: typer.Context, ids: IdsArgument, wait: WaitOption = False, timeout: TimeoutOption = "5m",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (needed when stdin is not "
                                                          "a terminal).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Terminate even when the CML licence registration could "
                                                        "not be released first (a licence_not_released alert "
                                                        "is raised).")] = False,
    output: OutputOption = Format.table,
) -> None:
    """Terminate workers: their EC2 instances are destroyed (--wait: until TERMINATED). Asks first. A worker
    with a CML controller (tag cml:url) has its licence released first; when that fails the call is refused
    (FAILED_PRECONDITION) unless --force."""
    if not yes:
        _confirm_terminate(clients(ctx).registry, ids)
    _change(ctx, ids, lambda registry, worker_id: registry.terminate(worker_id, force), output,
            worker_pb2.WORKER_STATUS_TERMINATED if wait else None, timeout)


def _confirm_terminate(registry: Registry, ids: list[str]) -> None:
    if not sys.stdin.isatty():
        raise CliError("terminate asks for confirmation and stdin is not a terminal: add --yes (nothing was "
                       "terminated)", USAGE)
    described = []
    for worker_id in ids:
        w = registry.get(worker_id)
        described.append(f"  {w.id}  {w.name}  {w.instance_id}  {w.region}  "
                         f"{short_name(worker_pb2.WorkerStatus, w.status)}")
    note("\n".join([f"About to terminate {len(ids)} worker(s); their EC2 instances will be destroyed:",
                    *described]))
    if not typer.confirm("Terminate?", default=False, err=True):
        raise CliError("not confirmed: nothing was terminated", FAILURE)


def _window(since: str, start: str, end: str, now: float) -> tuple[float, float | None]:
    """[start, end) in epoch seconds from the options of `workers metrics` (end None: now); a usage error naming
    the option otherwise."""
    if since and start:
        raise typer.BadParameter("give either --since or --start, not both", param_hint="--since")
    if start:
        try:
            begin = parse_time(start)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--start") from None
    else:
        begin = now - _duration(since or DEFAULT_SINCE, "--since")
    if not end:
        return begin, None
    try:
        finish = parse_time(end)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--end") from None
    if finish <= begin:
        raise typer.BadParameter(f"{end!r} is not after the start of the window", param_hint="--end")
    return begin, finish


def _step(value: str) -> Duration | None:
    if not value:
        return None
    seconds = _duration(value, "--step")
    if seconds < 1:
        raise typer.BadParameter(f"{value!r}: a step is at least 1s", param_hint="--step")
    step = Duration()
    step.FromNanoseconds(round(seconds * 1e9))
    return step


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


@app.command("metrics", epilog="Examples:\n\n  cmlmon workers metrics ID --since 6h --step 5m\n\n"
                               "  cmlmon workers metrics ID --start 2026-12-02T15:00:00Z --end 2026-12-02T18:00Z "
                               "-o json")
def worker_metrics(
    ctx: typer.Context, worker_id: Annotated[str, typer.Argument(metavar="ID", help="Worker id.")],
    since: Annotated[str, typer.Option(metavar="DURATION", help=f"The window starts this long ago, e.g. 15m, 6h, "
                                       f"1d ({DEFAULT_SINCE} unless --start is given).", show_default=False)] = "",
    start: Annotated[str, typer.Option(metavar="TIME", help="Start of the window (inclusive), e.g. "
                                       "2026-12-02T15:00:00Z; UTC unless an offset is given.",
                                       show_default=False)] = "",
    end: Annotated[str, typer.Option(metavar="TIME", help="End of the window (exclusive); now when not given.",
                                     show_default=False)] = "",
    step: Annotated[str, typer.Option(metavar="DURATION", help="Summarise per step of this width (at least 1s), "
                                      "e.g. 5m: samples, min/avg/max of CPU and memory, last status.",
                                      show_default=False)] = "",
    output: OutputOption = Format.table,
) -> None:
    """A worker's metric samples in a time window, oldest first, as the registry keeps them (GetWorkerMetrics,
    every page of them); with --step one row per step that holds samples."""
    begin, finish = _window(since, start, end, time.time())
    request = rs.GetWorkerMetricsRequest(worker_id=worker_id, start_time=_timestamp(begin),
                                         end_time=_timestamp(finish) if finish is not None else None,
                                         step=_step(step))
    history = clients(ctx).registry.metrics(request)
    empty = f"No samples of worker {worker_id} in the window."
    if request.HasField("step"):
        print_messages("buckets", history.buckets, bucket_columns(), output, empty=empty)
    else:
        print_messages("samples", history.samples, sample_columns(), output, empty=empty)


@app.command("watch", epilog="Examples:\n\n  cmlmon workers watch --region eu-west-1\n\n"
                             "  cmlmon workers watch -o json | jq .worker.status")
def watch_workers(
    ctx: typer.Context, region: RegionOption = "",
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include terminated workers at the start.")] = False,
    output: OutputOption = Format.table,
) -> None:
    """Follow the workers as they change: a table updated in place on a terminal; one line per event piped or
    with -o json. Ctrl-C ends it."""
    if output is Format.yaml:
        raise typer.BadParameter("watch prints table, wide or json (one JSON document per line)",
                                 param_hint="--output")
    watch(clients(ctx).registry, rs.WatchWorkersRequest(region=region, show_terminated=all_), output)
