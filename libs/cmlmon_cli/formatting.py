"""Pure text helpers of the command line: durations both ways, `k=v` tags, enum short names, and which table
columns fit a terminal. No I/O here, so every rule is unit-tested."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.timestamp_pb2 import Timestamp

_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def human_duration(seconds: float) -> str:
    """A short duration for people: "45s", "3m", "2h5m", "1d4h", "12d" (the second unit only while the first
    is below 10, as kubectl does: past that it is noise)."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    if total < 600:
        minutes, secs = divmod(total, 60)
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    if total < 3_600:
        return f"{total // 60}m"
    if total < 86_400:
        hours, rest = divmod(total, 3_600)
        return f"{hours}h{rest // 60}m" if hours < 10 and rest >= 60 else f"{hours}h"
    days, rest = divmod(total, 86_400)
    return f"{days}d{rest // 3_600}h" if days < 10 and rest >= 3_600 else f"{days}d"


def ts_seconds(ts: Timestamp) -> float | None:
    """A Timestamp as epoch seconds; None when unset (all zero)."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.seconds + ts.nanos / 1e9


def ago(ts: Timestamp, now: float) -> str:
    """ "3m ago", "in 2h" for a future time, "-" when the timestamp is unset."""
    at = ts_seconds(ts)
    if at is None:
        return "-"
    if at > now + 1:
        return f"in {human_duration(at - now)}"
    return f"{human_duration(now - at)} ago"


def parse_duration(text: str) -> float:
    """Seconds from "90s", "15m", "2h", "1d", "1h30m" or a bare number of seconds; ValueError otherwise."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{text!r} is not a duration (examples: 90s, 15m, 2h, 1d, 1h30m)")
        factor = dict(_UNITS)
        seconds = sum(float(n) * factor[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be more than zero")
    return seconds


def parse_time(text: str) -> float:
    """Epoch seconds from an RFC 3339 / ISO 8601 time: "2026-12-02T15:00:00Z", "2026-12-02T16:00+01:00",
    "2026-12-02 15:00" or "2026-12-02" (UTC when no offset is given); ValueError otherwise."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a time (examples: 2026-12-02T15:00:00Z, 2026-12-02 15:00, "
                         "2026-12-02; UTC unless an offset is given)") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


def utc_time(ts: Timestamp) -> str:
    """ "2026-12-02T15:00:05Z" (whole seconds, UTC), "-" when the timestamp is unset."""
    at = ts_seconds(ts)
    if at is None:
        return "-"
    return datetime.fromtimestamp(int(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_tags(items: Sequence[str]) -> dict[str, str]:
    """`k=v` strings into a dict; ValueError naming the first item without a key or an '='."""
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r} is not key=value")
        tags[key.strip()] = value
    return tags


def enum_prefix(enum: EnumTypeWrapper) -> str:
    """The prefix every value of a buf-style enum carries: "WORKER_STATUS_" for WorkerStatus."""
    first = enum.DESCRIPTOR.values[0].name
    return first.removesuffix("UNSPECIFIED")


def short_name(enum: EnumTypeWrapper, value: int) -> str:
    """RUNNING for WORKER_STATUS_RUNNING, "-" for UNSPECIFIED, the number for a value this client does not
    know (a newer server)."""
    if value == 0:
        return "-"
    try:
        name = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(enum_prefix(enum))


def parse_enum(enum: EnumTypeWrapper, text: str) -> int:
    """A value from its short or full name, any case ("running", "WORKER_STATUS_RUNNING"); ValueError naming
    the accepted names otherwise. UNSPECIFIED is never accepted."""
    prefix = enum_prefix(enum)
    wanted = text.strip().upper().replace("-", "_")
    for value in enum.DESCRIPTOR.values:
        if value.number != 0 and wanted in (value.name, value.name.removeprefix(prefix)):
            return int(value.number)
    names = ", ".join(short_names(enum))
    raise ValueError(f"{text!r} is not one of: {names}")


def short_names(enum: EnumTypeWrapper) -> list[str]:
    """The accepted names of an enum, lower-case, UNSPECIFIED left out."""
    prefix = enum_prefix(enum)
    return [v.name.removeprefix(prefix).lower() for v in enum.DESCRIPTOR.values if v.number != 0]


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


@dataclass(frozen=True)
class ColumnFit:
    """A column's natural width (widest cell or header) and its priority: the lowest priority goes first when
    the terminal is too narrow (kubectl-like: columns drop out rather than every cell wrapping)."""

    width: int
    priority: int


def fit_columns(columns: Sequence[ColumnFit], available: int, gap: int = 2) -> list[int]:
    """Indices of the columns to show, in their order: all when they fit side by side with gap spaces between
    them; else the lowest-priority ones are dropped (the rightmost first among equals) until the rest fit. The
    first column (the identity of the row) always stays, even when it alone is too wide."""
    kept = list(range(len(columns)))

    def width() -> int:
        return sum(columns[i].width for i in kept) + gap * max(0, len(kept) - 1)

    while len(kept) > 1 and width() > available:
        victim = min(kept[1:], key=lambda i: (columns[i].priority, -i))
        kept.remove(victim)
    return kept
