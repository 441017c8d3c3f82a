"""ListWorkers from the in-memory view: filters, stable id order, bounded pages, signed page tokens."""

from __future__ import annotations

from cml.monitor.v1 import registry_service_pb2 as rs
from registry.adapters import wire
from registry.domain import model, validation
from registry.domain.paging import PageTokens
from registry.errors import Unavailable
from registry.service.handlers import Registry
from registry.service.view import Predicate


def predicate(req: rs.ListWorkersRequest) -> Predicate:
    """The filter of a request, built from only the checks it asks for (a page walks ~page_size workers, so
    each check runs ~100 times per call)."""
    checks: list[Predicate] = []
    statuses = frozenset(req.statuses)
    if statuses:
        checks.append(lambda w: w.status in statuses)
    if not req.show_terminated and model.TERMINATED not in statuses:
        checks.append(lambda w: w.status != model.TERMINATED)
    if req.region:
        region = req.region
        checks.append(lambda w: w.region == region)
    if req.name_prefix:
        prefix = req.name_prefix
        checks.append(lambda w: w.name.startswith(prefix))
    if req.tags:
        tags = dict(req.tags)
        checks.append(lambda w: all(w.tags.get(k) == v for k, v in tags.items()))
    if len(checks) == 1:
        return checks[0]
    return lambda w: all(check(w) for check in checks)


async def list_workers(registry: Registry, req: rs.ListWorkersRequest) -> bytes:
    """A serialized ListWorkersResponse (built from the view's cached encodings)."""
    size = validation.list_(req)
    tokens: PageTokens | None = registry.page_tokens
    if tokens is None:
        raise Unavailable("registry is starting")
    after = tokens.read(req.page_token, req) if req.page_token else ""
    if not registry.view.ready.is_set():
        raise Unavailable("registry is loading its workers")
    view = registry.view
    parts, last_id, more = view.page(after, predicate(req), size)
    if more and parts:
        parts.append(wire.response_page_token(tokens.issue(last_id, req)))
    return b"".join(parts)
