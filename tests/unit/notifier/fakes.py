"""Fakes of the notifier's ports for unit tests of its logic; each implements its port (checked by mypy) and
honours the same contract as the real adapter (CAS on revisions, not-found errors)."""

from __future__ import annotations

from collections.abc import Mapping

from cml.monitor.v1 import alert_pb2
from notifier.adapters.last_sample import LastSampleSource
from notifier.adapters.publisher import AlertPublisher
from notifier.adapters.sinks import Sink
from notifier.adapters.state_kv import AlertStore
from notifier.domain.model import AlertState
from notifier.domain.payloads import AlertView
from notifier.domain.silences import Silence
from notifier.errors import DeliveryFailed, SilenceNotFound, StateConflict


class FakeStore(AlertStore):
    """Honours the AlertStore contract: CAS on revisions; `conflict_with` simulates another replica's write."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[AlertState, int]] = {}
        self.rev = 0
        self.conflict_with: AlertState | None = None
        self._silences: dict[str, Silence] = {}

    def cached(self, key: str) -> tuple[AlertState | None, int]:
        return self.data.get(key, (None, 0))

    def worker_states(self, worker_id: str) -> Mapping[str, AlertState]:
        return {s.rule: s for s, _ in self.data.values() if s.worker_id == worker_id}

    async def refresh(self, key: str) -> tuple[AlertState | None, int]:
        return self.cached(key)

    async def put(self, state: AlertState, revision: int) -> int:
        if self.conflict_with is not None:
            other, self.conflict_with = self.conflict_with, None
            self.rev += 1
            self.data[other.key] = (other, self.rev)
        if self.cached(state.key)[1] != revision:
            raise StateConflict(state.key)
        self.rev += 1
        self.data[state.key] = (state, self.rev)
        return self.rev

    def states(self) -> list[AlertState]:
        return [s for s, _ in self.data.values()]

    def silences(self) -> list[Silence]:
        return list(self._silences.values())

    async def put_silence(self, silence: Silence) -> None:
        self._silences[silence.silence_id] = silence

    async def delete_silence(self, silence_id: str) -> Silence:
        if silence_id not in self._silences:
            raise SilenceNotFound(silence_id)
        return self._silences.pop(silence_id)


class FakePublisher(AlertPublisher):
    def __init__(self) -> None:
        self.alerts: list[alert_pb2.Alert] = []

    async def publish_alert(self, alert: alert_pb2.Alert) -> None:
        self.alerts.append(alert)

    async def publish_deadletter(self, sink: str, alert: alert_pb2.Alert, reason: str, attempts: int) -> None:
        raise AssertionError("not used here")


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedSink(Sink):
    """Fails with the scripted errors, then succeeds."""

    def __init__(self, failures: list[DeliveryFailed]) -> None:
        self.name = "fake"
        self.failures = failures
        self.sent: list[AlertView] = []

    async def send(self, alert: AlertView) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(alert)


class FakeLastSamples(LastSampleSource):
    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.asked: list[str] = []

    async def last_sample_at(self, region: str, worker_id: str) -> float | None:
        self.asked.append(worker_id)
        return self.at.get(worker_id)
