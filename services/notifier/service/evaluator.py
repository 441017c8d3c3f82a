"""Use-cases of evaluation: a sample or lifecycle event in, alert state changed in KV, transitions out."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cml.monitor.v1.worker_pb2 import WORKER_STATUS_RUNNING as RUNNING
from cml.monitor.v1.worker_pb2 import WorkerStatus
from cmlmon_core.status import status_label
from notifier import metrics
from notifier.adapters.codec import transition_to_proto
from notifier.adapters.publisher import AlertPublisher
from notifier.adapters.state_kv import AlertStore
from notifier.domain import rules
from notifier.domain.model import (
    SEVERITIES,
    AlertState,
    FiringPolicy,
    Phase,
    Rule,
    Sample,
    Severity,
    Transition,
    TransitionKind,
    WorkerRef,
    alert_key,
    transition_id,
)
from notifier.domain.silences import is_silenced
from notifier.errors import StateConflict

log = logging.getLogger(__name__)
Change = Callable[[AlertState], tuple[AlertState, Transition | None]]
_MAX_CAS_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class Thresholds:
    cpu: float = 90.0
    memory: float = 90.0
    severities: dict[Rule, Severity] = field(default_factory=lambda: dict(SEVERITIES))


class Directory:
    """Workers as learnt from lifecycle events (name, instance id, tags, status). Every replica replays the
    last event of every CML_WORKERS subject into its own directory at start (DirectoryFeed), so it is complete
    after a restart too."""

    def __init__(self) -> None:
        self._workers: dict[str, WorkerRef] = {}
        self._seq: dict[str, int] = {}
        self.running_since: dict[str, float] = {}
        self.last_sample: dict[str, float] = {}

    def learn(self, worker: WorkerRef, at: float, seq: int = 0) -> None:
        """Record the worker as of an event; seq (stream sequence) keeps an older event from winning."""
        if seq and seq <= self._seq.get(worker.worker_id, 0):
            return
        if seq:
            self._seq[worker.worker_id] = seq
        before = self._workers.get(worker.worker_id)
        self._workers[worker.worker_id] = worker
        if worker.status == RUNNING and (before is None or before.status != RUNNING):
            self.running_since[worker.worker_id] = at
        elif worker.status != RUNNING:
            self.running_since.pop(worker.worker_id, None)

    def resolve(self, sample: Sample) -> WorkerRef:
        known = self._workers.get(sample.worker_id)
        if known is not None:
            return known
        return WorkerRef(worker_id=sample.worker_id, instance_id=sample.instance_id, region=sample.region)

    def get(self, worker_id: str) -> WorkerRef | None:
        return self._workers.get(worker_id)

    def workers(self) -> list[WorkerRef]:
        return list(self._workers.values())

    def running(self) -> list[WorkerRef]:
        return [w for w in self._workers.values() if w.status == RUNNING]


class Evaluator:
    def __init__(self, store: AlertStore, publisher: AlertPublisher, directory: Directory, policy: FiringPolicy,
                 thresholds: Thresholds, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._publisher = publisher
        self.directory = directory
        self._policy = policy
        self._thresholds = thresholds
        self._clock = clock

    async def handle_sample(self, sample: Sample) -> list[Transition]:
        """Evaluate one sample (the consumer counts them, in cmlmon_notifier_samples_evaluated_total)."""
        self.directory.last_sample[sample.worker_id] = max(sample.at, self.directory.last_sample.get(
            sample.worker_id, 0.0))
        states = self._store.worker_states(sample.worker_id)
        if rules.breaches_nothing(sample, self.directory.get(sample.worker_id), self._thresholds.cpu,
                                  self._thresholds.memory) and (not states or all(map(rules.at_rest, states.values()))):
            return []  # almost every sample: decided from two lookups, nothing built
        worker = self.directory.resolve(sample)
        out = await self._evaluate_readings(sample, worker)
        if self._firing(worker.worker_id, Rule.SILENT):
            out += await self.apply(worker, Rule.SILENT, lambda s: rules.resolve(s, sample.at), only_if_firing=True)
        if sample.status in rules.ALIVE and self._firing(worker.worker_id, Rule.UNEXPECTED_STOP):
            out += await self.apply(worker, Rule.UNEXPECTED_STOP, lambda s: rules.resolve(s, sample.at),
                                    only_if_firing=True)
        return out

    async def _evaluate_readings(self, sample: Sample, worker: WorkerRef) -> list[Transition]:
        """Step every sample rule by its reading of the sample; the common no-change outcome is decided from
        the cached state, without I/O."""
        out: list[Transition] = []
        readings = rules.sample_readings(sample, worker, self._thresholds.cpu, self._thresholds.memory,
                                         self._policy.hysteresis)
        for rule, reading in readings.items():
            if reading.breached is None:
                continue  # missing data changes nothing
            cached, _ = self._store.cached(alert_key(worker.worker_id, rule))
            if cached is None and not reading.breached:
                continue  # never breached, still fine: no state to keep
            current = cached or rules.initial_state(worker, rule, self._thresholds.severities)
            if rules.step(current, reading, self._policy)[0] is current:
                continue  # decided from the cache: nothing changes (the common case, kept free of I/O)
            out += await self.apply(worker, rule, lambda s, r=reading: rules.step(s, r, self._policy))  # type: ignore[misc]
        return out

    def firing_count(self) -> int:
        return sum(1 for s in self._store.states() if s.phase is Phase.FIRING)

    def is_firing(self, worker_id: str, rule: Rule) -> bool:
        return self._firing(worker_id, rule)

    def firing_by_rule(self) -> Counter[tuple[str, str]]:
        return Counter((s.rule, s.severity) for s in self._store.states() if s.phase is Phase.FIRING)

    def active_silences(self) -> int:
        now = self._clock()
        return sum(1 for s in self._store.silences() if s.active(now))

    def _firing(self, worker_id: str, rule: Rule) -> bool:
        state, _ = self._store.cached(alert_key(worker_id, rule))
        return state is not None and state.phase is Phase.FIRING

    async def handle_worker_event(self, worker: WorkerRef, previous_status: WorkerStatus, requested: bool,
                                  at: float, seq: int = 0) -> list[Transition]:
        metrics.EVENTS.inc()
        self.directory.learn(worker, at, seq)
        out: list[Transition] = []
        label = rules.worker_label(worker)
        for rule, firing in rules.lifecycle_verdicts(previous_status, worker, requested).items():
            if firing:
                what = "terminated" if rule is Rule.UNEXPECTED_TERMINATION else "stopped"
                summary = f"{label} {what} outside the registry (EC2 state {status_label(worker.status)})"
                out += await self.apply(worker, rule, lambda s, m=summary: rules.fire_now(s, at, m))  # type: ignore[misc]
            else:
                out += await self.apply(worker, rule, lambda s: rules.resolve(s, at), only_if_firing=True)
        return out

    async def mark_silent(self, worker: WorkerRef, at: float, quiet_seconds: float) -> list[Transition]:
        summary = f"{rules.worker_label(worker)} sent no metric sample for {quiet_seconds:.0f}s"
        return await self.apply(worker, Rule.SILENT, lambda s: rules.fire_now(s, at, summary))

    async def apply(self, worker: WorkerRef, rule: Rule, change: Change, *, only_if_firing: bool = False
                    ) -> list[Transition]:
        """Read-modify-CAS one alert's state. A transition is written first, with an outbox mark (its id), then
        published, then the mark cleared: a crash in between leaves the mark for the sweeper to publish."""
        key = alert_key(worker.worker_id, rule)
        state, revision = self._store.cached(key)
        for _ in range(_MAX_CAS_ATTEMPTS):
            if only_if_firing and (state is None or state.phase is not Phase.FIRING):
                return []
            current = state or rules.initial_state(worker, rule, self._thresholds.severities)
            new, transition = change(current)
            if new is current:
                return []
            if transition is not None:
                new = replace(new.with_worker(worker), silenced=self._silenced(current, transition))
                transition = replace(transition, state=new)
            if (new == current and state is not None) or (state is None and new.phase is Phase.INACTIVE):
                return []
            tid = transition_id(key, revision, transition.kind) if transition is not None else ""
            if transition is not None:
                new = replace(new, unpublished=tid, unpublished_since=self._clock())
                transition = replace(transition, state=new)
            try:
                written = await self._store.put(new, revision)
            except StateConflict:
                metrics.CONFLICTS.inc()
                state, revision = await self._store.refresh(key)
                continue
            if transition is None:
                return []
            # Only the writer that won the compare-and-set publishes; if it dies before publishing, the outbox
            # mark in the state makes the sweeper publish it (same id: JetStream drops a duplicate).
            await self._publish(transition, tid)
            await self._clear_outbox(new, written)
            return [transition]
        log.warning("alert state kept changing under us; giving up this update", extra={"key": key})
        return []

    async def _clear_outbox(self, state: AlertState, revision: int) -> None:
        # On a conflict a newer write carries the mark on, and the sweeper republishes it under the same id.
        with contextlib.suppress(StateConflict):
            await self._store.put(replace(state, unpublished="", unpublished_since=0.0), revision)

    async def publish_outbox(self, older_than: float = 5.0) -> int:
        """Publish transitions whose writer did not confirm publishing them (crashed, or NATS failed)."""
        now = self._clock()
        done = 0
        for state in self._store.states():
            if not state.unpublished or now - state.unpublished_since < older_than:
                continue
            kind = TransitionKind.RESOLVED if state.unpublished.endswith(".resolved") else TransitionKind.FIRING
            _, revision = self._store.cached(state.key)
            await self._publish(Transition(kind, state, state.unpublished_since), state.unpublished)
            await self._clear_outbox(state, revision)
            done += 1
        return done

    def _silenced(self, before: AlertState, transition: Transition) -> bool:
        """A firing is silenced when a silence covers it now; a resolution goes wherever its firing went, so
        nobody is left with an open incident whose end was muted."""
        if transition.kind is TransitionKind.RESOLVED:
            return before.silenced
        return is_silenced(self._store.silences(), transition.state, self._clock())

    async def _publish(self, transition: Transition, tid: str) -> None:
        await self._publisher.publish_alert(transition_to_proto(transition, tid))
        metrics.TRANSITIONS.labels(rule=transition.state.rule, kind=transition.kind).inc()
        s = transition.state
        log.info(  # the log sink writes the line people read; this one carries the fields
            "alert %s: %s", transition.kind, s.summary or s.key,
            extra={"alert_id": s.key, "worker_id": s.worker_id, "worker_name": s.worker_name,
                   "instance_id": s.instance_id, "rule": s.rule, "value": s.value, "threshold": s.threshold,
                   "status": str(transition.kind), "silenced": s.silenced, "transition_id": tid},
        )

    async def redeliver_unsilenced(self) -> list[Transition]:
        """Firing alerts whose silence has ended get delivered now (once: CAS on the silenced flag)."""
        now = self._clock()
        out: list[Transition] = []
        silences = self._store.silences()
        for state in self._store.states():
            if state.phase is not Phase.FIRING or not state.silenced or is_silenced(silences, state, now):
                continue
            worker = self.directory.get(state.worker_id) or WorkerRef(worker_id=state.worker_id)
            out += await self.apply(worker, Rule(state.rule), _unsilence, only_if_firing=True)
        return out


def _unsilence(state: AlertState) -> tuple[AlertState, Transition | None]:
    if not state.silenced:
        return state, None
    new = replace(state, silenced=False)
    return new, Transition(TransitionKind.FIRING, new, state.start_time or 0.0)
