"""ListWorkers from the in-memory view: filters, stable id order, bounded pages, signed page tokens."""

from __future__ import annotations

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import worker_pb2
from registry.domain import model, validation
from registry.domain.paging import PageTokens
from registry.errors import Unavailable
from registry.service.handlers import Registry
from registry.service.view import Predicate


def predicate(req: rs.ListWorkersRequest) -> Predicate:
    statuses = frozenset(req.statuses)
    hide_terminated = not req.show_terminated and model.TERMINATED not in statuses
    region = req.region
    prefix = req.name_prefix
    tags = dict(req.tags)

    def match(worker: worker_pb2.Worker) -> bool:
        if statuses and worker.status not in statuses:
            return False
        if hide_terminated and worker.status == model.TERMINATED:
            return False
        if region and worker.region != region:
            return False
        if prefix and not worker.name.startswith(prefix):
            return False
        return all(worker.tags.get(k) == v for k, v in tags.items())

    return match


async def list_workers(registry: Registry, req: rs.ListWorkersRequest) -> rs.ListWorkersResponse:
    size = validation.list_(req)
    tokens: PageTokens | None = registry.page_tokens
    if tokens is None:
        raise Unavailable("registry is starting")
    after = tokens.read(req.page_token, req) if req.page_token else ""
    if not registry.view.ready.is_set():
        raise Unavailable("registry is loading its workers")
    workers, more = registry.view.after(after, predicate(req), size)
    response = rs.ListWorkersResponse(workers=workers)
    if more and workers:
        response.next_page_token = tokens.issue(workers[-1].id, req)
    return response
