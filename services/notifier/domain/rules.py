"""Rule evaluation: pure functions from (state, reading) to (new state, transition or None)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from cml.monitor.v1 import worker_pb2 as W
from notifier.domain.model import (
    METRICS,
    SEVERITIES,
    AlertState,
    FiringPolicy,
    Phase,
    Reading,
    Rule,
    Sample,
    Severity,
    Transition,
    TransitionKind,
    WorkerRef,
)

THRESHOLD_TAGS: dict[Rule, str] = {Rule.CPU_HIGH: "cmlmon:cpu-threshold", Rule.MEMORY_HIGH: "cmlmon:memory-threshold"}
STOPPED = frozenset({W.WORKER_STATUS_STOPPING, W.WORKER_STATUS_STOPPED})
TERMINATED = frozenset({W.WORKER_STATUS_SHUTTING_DOWN, W.WORKER_STATUS_TERMINATED})
ALIVE = frozenset({W.WORKER_STATUS_PENDING, W.WORKER_STATUS_RUNNING})
CHECK_BAD = W.STATUS_CHECK_IMPAIRED
CHECK_GOOD = frozenset({W.STATUS_CHECK_OK, W.STATUS_CHECK_NOT_APPLICABLE})


def threshold_for(rule: Rule, worker: WorkerRef, default: float) -> float:
    """The worker's own threshold tag when it is a valid percentage, else the default."""
    raw = worker.tags.get(THRESHOLD_TAGS[rule], "") if worker.tags else ""
    if not raw:  # the common case: no tag (no exception raised and caught per sample)
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if 0 < value <= 100 else default


def threshold_reading(rule: Rule, value: float | None, threshold: float, at: float, hysteresis: float,
                      worker_label: str) -> Reading:
    if value is None:
        return Reading(at=at, breached=None, threshold=threshold)
    breached = value > threshold
    summary = ""
    if breached:  # formatted only when it may be used: this runs for every sample
        metric = {"cpu": "CPU", "memory": "memory"}[METRICS[rule]]
        summary = f"{worker_label}: {metric} {value:.1f}% over threshold {threshold:g}%"
    return Reading(at=at, breached=breached, cleared=value < threshold - hysteresis, value=value,
                   threshold=threshold, summary=summary)


def status_check_reading(sample: Sample, worker_label: str) -> Reading:
    checks = (sample.system_check, sample.instance_check)
    if CHECK_BAD in checks:
        which = "system" if sample.system_check == CHECK_BAD else "instance"
        return Reading(at=sample.at, breached=True, summary=f"{worker_label}: EC2 {which} status check impaired")
    if all(c in CHECK_GOOD for c in checks):
        return Reading(at=sample.at, breached=False, cleared=True)
    return Reading(at=sample.at, breached=None)  # initializing / insufficient data / not observed


SAMPLE_RULES = (Rule.CPU_HIGH, Rule.MEMORY_HIGH, Rule.STATUS_CHECK_IMPAIRED)


def breaches_nothing(sample: Sample, worker: WorkerRef | None, cpu_default: float, memory_default: float) -> bool:
    """No rule of SAMPLE_RULES is breached by the sample (what sample_readings would say, without building the
    readings): for a worker whose states are all `at_rest`, such a sample changes nothing. worker None: one
    known only from its samples (no tags, so the defaults apply)."""
    if worker is not None and worker.tags:
        cpu_default = threshold_for(Rule.CPU_HIGH, worker, cpu_default)
        memory_default = threshold_for(Rule.MEMORY_HIGH, worker, memory_default)
    return ((sample.cpu is None or sample.cpu <= cpu_default)
            and (sample.memory is None or sample.memory <= memory_default)
            and sample.system_check != CHECK_BAD and sample.instance_check != CHECK_BAD)


_RESOLVED_BY_SAMPLES = frozenset({Rule.SILENT, Rule.UNEXPECTED_STOP})


def at_rest(state: AlertState) -> bool:
    """A sample that breaches nothing leaves this state as it is: a sample rule's state that is neither pending,
    firing nor remembering a breach in its window, or a silent/unexpected_stop alert that is not firing (a
    sample resolves those), or a rule samples do not drive."""
    if state.rule in SAMPLE_RULES:
        return state.phase is Phase.INACTIVE and True not in state.window
    if state.rule in _RESOLVED_BY_SAMPLES:
        return state.phase is not Phase.FIRING
    return True


def sample_readings(sample: Sample, worker: WorkerRef, cpu_default: float, memory_default: float,
                    hysteresis: float) -> dict[Rule, Reading]:
    label = worker_label(worker)
    return {
        Rule.CPU_HIGH: threshold_reading(Rule.CPU_HIGH, sample.cpu, threshold_for(Rule.CPU_HIGH, worker, cpu_default),
                                         sample.at, hysteresis, label),
        Rule.MEMORY_HIGH: threshold_reading(Rule.MEMORY_HIGH, sample.memory,
                                            threshold_for(Rule.MEMORY_HIGH, worker, memory_default),
                                            sample.at, hysteresis, label),
        Rule.STATUS_CHECK_IMPAIRED: status_check_reading(sample, label),
    }


def worker_label(worker: WorkerRef) -> str:
    name = worker.name or worker.worker_id
    return f"worker {name} ({worker.instance_id})" if worker.instance_id else f"worker {name}"


def initial_state(worker: WorkerRef, rule: Rule, severities: Mapping[Rule, Severity] | None = None) -> AlertState:
    severity = (severities or SEVERITIES).get(rule, SEVERITIES[rule])
    return AlertState(worker_id=worker.worker_id, rule=rule, severity=severity, worker_name=worker.name,
                      instance_id=worker.instance_id, region=worker.region)


def parse_severities(spec: str) -> dict[Rule, Severity]:
    """"cpu_high=critical,silent=info" -> the default severities with those changed; ValueError names the
    bad entry."""
    out = dict(SEVERITIES)
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        rule, sep, severity = (x.strip() for x in item.partition("="))
        if not sep or rule not in Rule.__members__.values() or severity not in Severity.__members__.values():
            raise ValueError(f"{item!r}: expected <rule>=<info|warning|critical> with rule one of "
                             f"{', '.join(r.value for r in Rule)}")
        out[Rule(rule)] = Severity(severity)
    return out


def step(state: AlertState, reading: Reading, policy: FiringPolicy) -> tuple[AlertState, Transition | None]:
    """Advance a duration/M-of-N rule by one reading."""
    if reading.breached is None:
        return state, None  # missing data neither fires nor resolves
    if state.phase is Phase.FIRING:
        if reading.cleared:
            return resolve(state, reading.at, reading.value)
        return state, None
    window = (*state.window, reading.breached)[-policy.window_samples:]
    if not reading.breached and not any(window):
        if state.phase is Phase.INACTIVE and not any(state.window):
            return state, None  # the common case, kept cheap (a window of only False counts like an empty one)
        return replace(state, phase=Phase.INACTIVE, window=window, pending_since=None), None
    since = state.pending_since if state.pending_since is not None else reading.at
    pending = replace(state, phase=Phase.PENDING, window=window, pending_since=since)
    held = reading.at - since >= policy.for_seconds
    if reading.breached and sum(window) >= policy.min_samples and held:
        return fire(pending, reading)
    return pending, None


def fire(state: AlertState, reading: Reading) -> tuple[AlertState, Transition]:
    new = replace(state, phase=Phase.FIRING, window=(), pending_since=None, start_time=reading.at, end_time=None,
                  value=reading.value, threshold=reading.threshold, summary=reading.summary)
    return new, Transition(TransitionKind.FIRING, new, reading.at)


def resolve(state: AlertState, at: float, value: float | None = None) -> tuple[AlertState, Transition | None]:
    if state.phase is not Phase.FIRING:
        return state, None
    new = replace(state, phase=Phase.INACTIVE, window=(), pending_since=None, end_time=at,
                  value=value if value is not None else state.value)
    return new, Transition(TransitionKind.RESOLVED, new, at)


def fire_now(state: AlertState, at: float, summary: str) -> tuple[AlertState, Transition | None]:
    """Event rules (unexpected stop/termination, silent) fire on detection; detection is their duration."""
    if state.phase is Phase.FIRING:
        return state, None
    return fire(state, Reading(at=at, breached=True, summary=summary))


def lifecycle_verdicts(previous_status: W.WorkerStatus, worker: WorkerRef, requested: bool
                       ) -> dict[Rule, bool]:
    """For a lifecycle event: which lifecycle rules to fire (True) or resolve (False)."""
    status = worker.status
    out: dict[Rule, bool] = {}
    if status in TERMINATED:
        if not requested and previous_status not in TERMINATED:
            out[Rule.UNEXPECTED_TERMINATION] = True
        out[Rule.UNEXPECTED_STOP] = False
        out[Rule.SILENT] = False
    elif status in STOPPED:
        if not requested and previous_status not in STOPPED:
            out[Rule.UNEXPECTED_STOP] = True
        elif requested:
            out[Rule.UNEXPECTED_STOP] = False
        out[Rule.SILENT] = False
    elif status in ALIVE:
        out[Rule.UNEXPECTED_STOP] = False
    return out


def is_silent(last_sample_at: float | None, known_since: float, now: float, interval: float, intervals: float) -> bool:
    """No sample for `intervals` poll intervals (counted from the last sample, or from when the worker became
    known to be running if it never sent one)."""
    reference = last_sample_at if last_sample_at is not None else known_since
    return now - reference > intervals * interval
