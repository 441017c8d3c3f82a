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
# Tokens remembered (issued here, or read and verified): a page of 100 out of 100,000 workers makes 1,000.
_REMEMBERED = 8192


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
        # Tokens are deterministic: the same page of the same filter always has the same one. So a token issued
        # or verified once is remembered, both ways, and the MAC is not computed again for it (the exact token
        # string must match; what is remembered was signed with this key).
        self._tokens: dict[tuple[bytes, str], str] = {}  # (filter digest, last id) -> token
        self._pages: dict[str, tuple[bytes, str]] = {}  # token -> (filter digest, last id)

    def _remember(self, token: str, digest: bytes, last_id: str) -> None:
        if len(self._pages) >= _REMEMBERED:
            self._tokens.clear()
            self._pages.clear()
        self._tokens[digest, last_id] = token
        self._pages[token] = (digest, last_id)

    def _mac(self, body: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(body)
        return mac.digest()[:_MAC_BYTES]

    def issue(self, last_id: str, req: PagedRequest, digest: bytes | None = None) -> str:
        """A token for the page after last_id; digest: filter_digest(req), when the caller has it already."""
        digest = digest or filter_digest(req)
        token = self._tokens.get((digest, last_id))
        if token is None:
            body = digest + last_id.encode()
            token = base64.urlsafe_b64encode(self._mac(body) + body).decode().rstrip("=")
            self._remember(token, digest, last_id)
        return token

    def read(self, token: str, req: PagedRequest, digest: bytes | None = None) -> str:
        """The last id the token stands for; InvalidArgument when forged, corrupted or for other filters."""
        digest = digest or filter_digest(req)
        known = self._pages.get(token)
        if known is not None:
            if known[0] != digest:
                raise InvalidArgument("page_token", "issued for other filters")
            return known[1]
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise InvalidArgument("page_token", "not a token this registry issued") from None
        mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if len(body) < 8 or not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidArgument("page_token", "not a token this registry issued")
        if body[:8] != digest:
            raise InvalidArgument("page_token", "issued for other filters")
        try:
            last_id = body[8:].decode()
        except UnicodeDecodeError:
            raise InvalidArgument("page_token", "not a token this registry issued") from None
        self._remember(token, digest, last_id)
        return last_id
