"""Opaque, tamper-evident page tokens: the last id of a page and a digest of the filters, signed with a key
shared by every registry replica. A token this registry did not issue, or one reused with other filters,
is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac

from cml.monitor.v1 import registry_service_pb2 as rs
from registry.errors import InvalidArgument

_MAC_BYTES = 16


PagedRequest = rs.ListWorkersRequest | rs.GetWorkerMetricsRequest


def filter_digest(req: PagedRequest) -> bytes:
    """What a page token is bound to: the request type and every field but page_size and page_token."""
    key = type(req)()
    key.CopyFrom(req)  # type: ignore[arg-type]
    key.page_size = 0
    key.page_token = ""
    kind = b"" if isinstance(req, rs.ListWorkersRequest) else req.DESCRIPTOR.full_name.encode()
    return hashlib.sha256(kind + key.SerializeToString(deterministic=True)).digest()[:8]


class PageTokens:
    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("page token secret must not be empty")
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)  # copied per token: the key is prepared once

    def _mac(self, body: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(body)
        return mac.digest()[:_MAC_BYTES]

    def issue(self, last_id: str, req: PagedRequest, digest: bytes | None = None) -> str:
        """A token for the page after last_id; digest: filter_digest(req), when the caller has it already."""
        body = (digest or filter_digest(req)) + last_id.encode()
        return base64.urlsafe_b64encode(self._mac(body) + body).decode().rstrip("=")

    def read(self, token: str, req: PagedRequest, digest: bytes | None = None) -> str:
        """The last id the token stands for; InvalidArgument when forged, corrupted or for other filters."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise InvalidArgument("page_token", "not a token this registry issued") from None
        mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if len(body) < 8 or not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidArgument("page_token", "not a token this registry issued")
        if body[:8] != (digest or filter_digest(req)):
            raise InvalidArgument("page_token", "issued for other filters")
        try:
            return body[8:].decode()
        except UnicodeDecodeError:
            raise InvalidArgument("page_token", "not a token this registry issued") from None
