"""Protobuf payloads on NATS: binary encoding with a Content-Type header naming the message type, and the
headers of the contract."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError as _ProtoDecodeError
from google.protobuf.message import Message

CONTENT_TYPE = "Content-Type"
MSG_ID = "Nats-Msg-Id"
TRACEPARENT = "traceparent"
_PREFIX = "application/protobuf; proto="

M = TypeVar("M", bound=Message)
_CONTENT_TYPES: dict[type[Message], str] = {}


class UndecodableMessage(Exception):
    """A NATS message that is not the protobuf message its consumer expects; terminate it, never retry."""


def content_type(message_type: type[Message]) -> str:
    known = _CONTENT_TYPES.get(message_type)
    if known is None:  # once per type: every message decoded asks
        known = _CONTENT_TYPES[message_type] = _PREFIX + message_type.DESCRIPTOR.full_name
    return known


def encode(message: Message, *, msg_id: str | None = None, headers: dict[str, str] | None = None
           ) -> tuple[bytes, dict[str, str]]:
    """Serialize message; return the payload and the headers to publish it with."""
    out = {CONTENT_TYPE: content_type(type(message))}
    if msg_id:
        out[MSG_ID] = msg_id
    if headers:
        out.update(headers)
    return message.SerializeToString(), out


def decode(message_type: type[M], data: bytes, headers: dict[str, str] | None) -> M:
    """Parse data as message_type; raise UndecodableMessage when the type header or the bytes are wrong."""
    declared = (headers or {}).get(CONTENT_TYPE)
    expected = content_type(message_type)
    if declared is not None and declared != expected:
        raise UndecodableMessage(f"expected {expected!r}, got Content-Type {declared!r}")
    message = message_type()
    try:
        message.ParseFromString(data)
    except _ProtoDecodeError as exc:
        raise UndecodableMessage(f"cannot parse {message_type.DESCRIPTOR.full_name}: {exc}") from exc
    return message
