"""Silences: matching rules and validation. A silenced alert is evaluated and recorded, not delivered."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from notifier.domain.model import AlertState


@dataclass(frozen=True, slots=True)
class Silence:
    silence_id: str
    worker_id: str
    rule: str
    end_time: float
    comment: str = ""
    created_by: str = ""
    create_time: float = 0.0

    def active(self, now: float) -> bool:
        return now < self.end_time

    def matches(self, worker_id: str, rule: str) -> bool:
        return (not self.worker_id or self.worker_id == worker_id) and (not self.rule or self.rule == rule)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Silence:
        data: dict[str, Any] = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def validate_silence(worker_id: str, rule: str, end_time: float, now: float) -> str | None:
    """The reason a silence request is refused, or None."""
    if not worker_id and not rule:
        return "a silence must name a worker_id, a rule, or both"
    if end_time <= now:
        return "end_time must be in the future"
    return None


def is_silenced(silences: list[Silence], state: AlertState, now: float) -> bool:
    return any(s.active(now) and s.matches(state.worker_id, state.rule) for s in silences)
