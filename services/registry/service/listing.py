"""ListWorkers from the in-memory view: filters, stable id order, bounded pages, signed page tokens."""

from __future__ import annotations

from cml.monitor.v1 import registry_service_pb2 as rs
from registry.adapters import wire
from registry.domain import model, validation
from registry.domain.paging import PageTokens, filter_digest
from registry.errors import Unavailable
from registry.service.handlers import Registry
from registry.service.view import Predicate, WorkerFilter

_TERMINATED = frozenset({model.TERMINATED})
# The request most calls make: no filter (every worker but the terminated ones), only a page size and token.
_UNFILTERED = WorkerFilter(hidden=_TERMINATED)
_UNFILTERED_DIGEST = filter_digest(rs.ListWorkersRequest())


def predicate(req: rs.ListWorkersRequest) -> WorkerFilter:
    """The filter of a request, built from only the checks it asks for (a page walks ~page_size workers, so
    each check runs ~100 times per call); the status check alone is answered without reading the worker."""
    statuses = frozenset(req.statuses)
    hide_terminated = not req.show_terminated and model.TERMINATED not in statuses
    checks: list[Predicate] = []
    if req.region:
        region = req.region
        checks.append(lambda w: w.region == region)
    if req.name_prefix:
        prefix = req.name_prefix
        checks.append(lambda w: w.name.startswith(prefix))
    if req.tags:
        tags = dict(req.tags)
        checks.append(lambda w: all(w.tags.get(k) == v for k, v in tags.items()))
    rest = None if not checks else checks[0] if len(checks) == 1 else lambda w: all(check(w) for check in checks)
    if statuses:
        return WorkerFilter(statuses - _TERMINATED if hide_terminated else statuses, rest=rest)
    return WorkerFilter(hidden=_TERMINATED if hide_terminated else frozenset(), rest=rest)


def list_workers(registry: Registry, req: rs.ListWorkersRequest) -> bytes:
    """A serialized ListWorkersResponse (built from the view's cached encodings)."""
    size = validation.list_(req)
    tokens: PageTokens | None = registry.page_tokens
    if tokens is None:
        raise Unavailable("registry is starting")
    # no field set but page_size and page_token: the filter and its digest are known
    unfiltered = len(req.ListFields()) == bool(req.page_size) + bool(req.page_token)
    digest = _UNFILTERED_DIGEST if unfiltered else filter_digest(req)
    after = tokens.read(req.page_token, req, digest) if req.page_token else ""
    if not registry.view.ready.is_set():
        raise Unavailable("registry is loading its workers")
    view = registry.view
    parts, last_id, more = view.page(after, _UNFILTERED if unfiltered else predicate(req), size)
    if more and parts:
        parts.append(wire.response_page_token(tokens.issue(last_id, req, digest)))
    return b"".join(parts)
