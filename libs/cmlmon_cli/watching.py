"""Following WatchWorkers: `--wait` after a start, stop or terminate, and `workers watch` (a live table on a
terminal, one line per event otherwise)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import grpc
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from cml.monitor.v1 import events_pb2, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cmlmon_cli.client import Registry
from cmlmon_cli.errors import FAILURE, CliError
from cmlmon_cli.formatting import human_duration, short_name
from cmlmon_cli.output import Format, build_table, console, json_line, to_dict
from cmlmon_cli.views import worker_columns

GONE = (worker_pb2.WORKER_STATUS_SHUTTING_DOWN, worker_pb2.WORKER_STATUS_TERMINATED)


def following(registry: Registry, request: rs.WatchWorkersRequest, deadline: float | None = None
              ) -> Iterator[rs.WatchWorkersResponse]:
    """The watch's responses for as long as the caller reads, watching again when the server drops a reader
    that fell behind (ABORTED: the new snapshot brings it up to date). Ends with CliError when the deadline
    (time.monotonic) passes, the server goes away, or it ends the stream (it is shutting down)."""
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise CliError("timed out", FAILURE, grpc.StatusCode.DEADLINE_EXCEEDED)
        try:
            yield from registry.watch(request, timeout=remaining)
        except CliError as exc:
            if exc.status != grpc.StatusCode.ABORTED:
                raise
            continue
        raise CliError("the registry ended the watch (it is shutting down)", FAILURE)


def wait_for(registry: Registry, worker_ids: Sequence[str], target: int, timeout: float) -> list[worker_pb2.Worker]:
    """Block until every worker has the target status; their last states, in the order given. CliError when
    the timeout passes first, or when a worker is terminated while waiting for another status."""
    target_name = short_name(worker_pb2.WorkerStatus, target)
    latest: dict[str, worker_pb2.Worker] = {}
    wanted = set(worker_ids)
    request = rs.WatchWorkersRequest(show_terminated=True)
    try:
        for response in following(registry, request, time.monotonic() + timeout):
            worker = response.worker
            if worker.id not in wanted:
                continue
            latest[worker.id] = worker
            if target not in GONE and worker.status in GONE:
                raise CliError(f"worker {worker.id} is {short_name(worker_pb2.WorkerStatus, worker.status)}: it "
                               f"will not become {target_name}")
            if all(i in latest and latest[i].status == target for i in wanted):
                return [latest[i] for i in worker_ids]
    except CliError as exc:
        if exc.status != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    pending = ", ".join(f"{i} is {short_name(worker_pb2.WorkerStatus, latest[i].status) if i in latest else '?'}"
                        for i in worker_ids if i not in latest or latest[i].status != target)
    raise CliError(f"timed out after {human_duration(timeout)} waiting for {target_name}: {pending}")


class WatchScreen:
    """The state a live table shows: every worker seen, and the latest change. Filled by the thread reading
    the stream, drawn by rich's refresh thread (hence the lock), so the ages keep counting between events."""

    def __init__(self, region: str, fmt: Format) -> None:
        self._lock = threading.Lock()
        self._workers: dict[str, worker_pb2.Worker] = {}
        self._last = "waiting for the first change"
        self._region = region or "all regions"
        self._fmt = fmt

    def apply(self, response: rs.WatchWorkersResponse) -> None:
        worker = response.worker
        with self._lock:
            self._workers[worker.id] = worker
            if not response.initial:
                event = short_name(events_pb2.WorkerEventType, response.event_type)
                self._last = (f"{time.strftime('%H:%M:%S')} {worker.name or worker.id}: {event.lower()}, now "
                              f"{short_name(worker_pb2.WorkerStatus, worker.status)}")

    def render(self, width: int) -> RenderableType:
        with self._lock:
            workers = sorted(self._workers.values(), key=lambda w: w.id)
            last = self._last
        header = Text(f"Watching {len(workers)} workers in {self._region} (Ctrl-C ends). Last change: {last}",
                      style="dim")
        return Group(header, build_table(worker_columns(), workers, self._fmt, width))


def watch(registry: Registry, request: rs.WatchWorkersRequest, fmt: Format) -> None:
    """Until Ctrl-C: a live table on a terminal, a line per event piped, or a JSON document per line."""
    responses = following(registry, request)
    if fmt is Format.json:
        for response in responses:
            json_line(to_dict(response))
        return
    out = console()
    if not out.is_terminal:
        for response in responses:
            _print_event(response)
        return
    screen = WatchScreen(request.region, fmt)
    with Live(console=out, get_renderable=lambda: screen.render(out.width), refresh_per_second=2,
              transient=False) as live:
        for response in responses:
            screen.apply(response)
            live.refresh()


def _print_event(response: rs.WatchWorkersResponse) -> None:
    w = response.worker
    event = "snapshot" if response.initial else short_name(events_pb2.WorkerEventType, response.event_type).lower()
    status = short_name(worker_pb2.WorkerStatus, w.status)
    note_line = f"{time.strftime('%H:%M:%S')}  {event:<14} {w.id:<24} {w.name:<24} {w.region:<14} {status}"
    print(note_line.rstrip(), flush=True)


