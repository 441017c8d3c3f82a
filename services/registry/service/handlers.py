"""The registry's use-cases. Every write is a compare-and-set on the worker's KV revision, retried on
conflict; a write that makes a lifecycle event saves the event with the state (the outbox), then publishes
it and clears it. Whoever finds an unconfirmed event (the next writer, the start-up sweep) publishes it first,
so an event is neither lost nor doubled when the process dies in between."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cml.monitor.v1 import events_pb2, registry_service_pb2, worker_pb2
from registry.adapters.ec2 import Ec2, Instance, LaunchSpec
from registry.adapters.history import MetricHistory
from registry.adapters.licence import LicenceReleaser
from registry.adapters.publisher import EventPublisher
from registry.adapters.repository import Stored, WorkerRepository
from registry.domain import model, validation
from registry.domain.model import Change
from registry.domain.paging import PageTokens
from registry.errors import (
    Aborted,
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    NotFound,
    RegistryError,
    Unavailable,
)
from registry.service.view import WorkerView

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 30
# A claim whose worker was never saved (its writer died in between) is free again after this long.
CLAIM_ORPHAN_SECONDS = 30.0
Decide = Callable[[worker_pb2.Worker], Change | None]
# Called with every state saved together with an unpublished event, before that event is published; tests
# inject one that kills the process there, to prove the outbox.
SavedHook = Callable[[Stored], None]


@dataclass(frozen=True, slots=True)
class RegistryOptions:
    missing_grace_seconds: float = 300.0


async def _backoff(attempt: int) -> None:
    """Jittered pause before retrying a lost compare-and-set, so that writers do not collide in lockstep."""
    await asyncio.sleep(random.uniform(0, min(0.001 * 2**attempt, 0.05)))


def _now() -> datetime:
    return datetime.now(UTC)


class Registry:
    """Use-cases over the ports; knows nothing of gRPC or NATS message handling."""

    def __init__(self, repo: WorkerRepository, ec2: Ec2, publisher: EventPublisher, view: WorkerView,
                 options: RegistryOptions | None = None, *, on_saved: SavedHook | None = None) -> None:
        self.repo = repo
        self.ec2 = ec2
        self.publisher = publisher
        self.view = view
        self.options = options or RegistryOptions()
        self._on_saved = on_saved
        self.page_tokens: PageTokens | None = None  # set at start-up, once the shared key is known
        self.history: MetricHistory | None = None  # kept from the samples, for GetWorkerMetrics; set by bootstrap
        self.licences: LicenceReleaser | None = None  # releases CML licences before termination
        self._create_locks: dict[str, tuple[asyncio.Lock, int]] = {}  # worker id -> lock, callers using it

    # --- reads -------------------------------------------------------------------------------------------

    async def get_stored(self, worker_id: str) -> Stored:
        stored = self.view.get(worker_id)
        if stored is None:  # written by another replica a moment ago, not yet seen by our watch
            stored = await self.repo.get(worker_id)
            if stored is not None:
                self.view.apply(stored)
        if stored is None:
            raise NotFound(f"worker {worker_id} not found")
        return stored

    async def get_worker(self, worker_id: str) -> worker_pb2.Worker:
        validation.worker_id(worker_id)
        return (await self.get_stored(worker_id)).worker

    # --- create / import ----------------------------------------------------------------------------------

    async def create_worker(self, req: registry_service_pb2.CreateWorkerRequest, principal: str = ""
                            ) -> worker_pb2.Worker:
        """principal (here and in every call below): who asked; the lifecycle event carries it."""
        validation.create(req)
        worker_id = model.created_worker_id(req.request_id)
        # Concurrent retries in this process wait for each other; across replicas the ClientToken makes EC2
        # return the one instance (moto does not honour ClientToken, AWS does).
        lock, users = self._create_locks.get(worker_id, (asyncio.Lock(), 0))
        self._create_locks[worker_id] = (lock, users + 1)
        try:
            async with lock:
                return await self._create_worker(req, worker_id, principal)
        finally:
            lock, users = self._create_locks[worker_id]
            if users == 1:
                del self._create_locks[worker_id]
            else:
                self._create_locks[worker_id] = (lock, users - 1)

    async def _create_worker(self, req: registry_service_pb2.CreateWorkerRequest, worker_id: str, principal: str
                             ) -> worker_pb2.Worker:
        existing = await self.repo.get(worker_id)
        if existing is not None:  # a retry: same worker, no second launch
            w = existing.worker
            if (w.name, w.region, w.instance_type, w.ami_id) != (req.name, req.region, req.instance_type, req.ami_id):
                raise AlreadyExists(f"request_id {req.request_id!r} was used for another worker ({w.id})")
            return await self._settle(existing)
        token = model.client_token(req.request_id)
        instance = await self.ec2.find_by_tag(req.region, model.REQUEST_TAG, token)
        if instance is None:
            instance = await self.ec2.launch(LaunchSpec(
                region=req.region, instance_type=req.instance_type, ami_id=req.ami_id, client_token=token,
                tags={**dict(req.tags), "Name": req.name, model.OWNER_TAG: worker_id, model.REQUEST_TAG: token},
                subnet_id=req.subnet_id, security_group_ids=tuple(req.security_group_ids), key_name=req.key_name,
            ))
            log.info("instance launched", extra={"worker_id": worker_id, "instance_id": instance.instance_id})
        else:
            log.info("instance of an earlier attempt found", extra={"worker_id": worker_id,
                                                                     "instance_id": instance.instance_id})
        worker = self._new_worker(worker_id, req.region, instance, origin=worker_pb2.WORKER_ORIGIN_CREATED)
        worker.name = req.name
        worker.tags.update(req.tags)
        worker.ami_id = req.ami_id
        worker.poll_interval_seconds = req.poll_interval_seconds
        worker.requested_status = model.RUNNING
        worker.requested_time.FromDatetime(_now())
        await self._claim(req.region, instance.instance_id, worker_id, create_only=True)
        return await self._insert(worker, events_pb2.WORKER_EVENT_TYPE_CREATED, principal)

    async def import_worker(self, req: registry_service_pb2.ImportWorkerRequest, principal: str = ""
                            ) -> worker_pb2.Worker:
        validation.import_(req)
        instance = await self.ec2.describe(req.region, req.instance_id)
        if instance is None:
            raise NotFound(f"EC2 does not know instance {req.instance_id} in {req.region}")
        if instance.status == model.TERMINATED:
            raise FailedPrecondition(f"instance {req.instance_id} is terminated")
        worker_id = model.imported_worker_id()
        await self._claim(req.region, req.instance_id, worker_id, create_only=False)
        worker = self._new_worker(worker_id, req.region, instance, origin=worker_pb2.WORKER_ORIGIN_IMPORTED)
        worker.name = req.name or validation.sanitize_name(instance.tags.get("Name", ""), req.instance_id)
        worker.tags.update(req.tags or validation.importable_tags(instance.tags))
        worker.poll_interval_seconds = req.poll_interval_seconds
        return await self._insert(worker, events_pb2.WORKER_EVENT_TYPE_IMPORTED, principal)

    def _new_worker(self, worker_id: str, region: str, instance: Instance, origin: worker_pb2.WorkerOrigin
                    ) -> worker_pb2.Worker:
        worker = worker_pb2.Worker(
            id=worker_id, region=region, instance_id=instance.instance_id, instance_type=instance.instance_type,
            status=instance.status or model.PENDING, ami_id=instance.ami_id, origin=origin,
            root_device_type=instance.root_device_type,
            monitoring_mode=(worker_pb2.MONITORING_MODE_DETAILED if instance.detailed_monitoring
                             else worker_pb2.MONITORING_MODE_BASIC),
        )
        now = _now()
        worker.create_time.FromDatetime(now)
        worker.update_time.FromDatetime(now)
        return worker

    async def _claim(self, region: str, instance_id: str, worker_id: str, *, create_only: bool) -> None:
        """Make worker_id the owner of the instance; ALREADY_EXISTS when a live worker owns it."""
        for _ in range(CAS_ATTEMPTS):
            claim = await self.repo.get_claim(region, instance_id)
            if claim is not None:
                if claim.worker_id == worker_id:
                    return
                owner = await self.repo.get(claim.worker_id)
                if owner is not None and owner.worker.status != model.TERMINATED:
                    raise AlreadyExists(f"worker {claim.worker_id} already has instance {instance_id}")
                if create_only and owner is not None:
                    raise AlreadyExists(f"instance {instance_id} belonged to worker {claim.worker_id}")
                if owner is None and time.time() - claim.claimed_at < CLAIM_ORPHAN_SECONDS:
                    # the owner may be between claiming and saving right now (another call, another replica)
                    raise AlreadyExists(f"instance {instance_id} is being taken by worker {claim.worker_id}")
            try:
                await self.repo.put_claim(region, instance_id, worker_id, claim.revision if claim else None)
                return
            except Conflict:
                continue
        raise Unavailable(f"instance {instance_id}: too much contention")

    async def _insert(self, worker: worker_pb2.Worker, event_type: model.EventType, principal: str
                      ) -> worker_pb2.Worker:
        change = Change(worker, event_type, model.UNSPECIFIED, True, principal)
        pending = model.pending_event(change, _now())
        try:
            stored = await self.repo.create(worker, pending)
        except Conflict:  # a concurrent retry of the same request saved it first
            existing = await self.repo.get(worker.id)
            if existing is None:
                raise Unavailable(f"worker {worker.id} vanished while being created") from None
            return await self._settle(existing)
        return await self._after_save(stored)

    # --- lifecycle calls ----------------------------------------------------------------------------------

    async def start_worker(self, worker_id: str, etag: str = "", principal: str = "") -> worker_pb2.Worker:
        return await self._transition(worker_id, etag, model.start_needed, self.ec2.start, model.RUNNING,
                                      events_pb2.WORKER_EVENT_TYPE_STARTED, principal)

    async def stop_worker(self, worker_id: str, etag: str = "", principal: str = "") -> worker_pb2.Worker:
        return await self._transition(worker_id, etag, model.stop_needed, self.ec2.stop, model.STOPPED,
                                      events_pb2.WORKER_EVENT_TYPE_STOPPED, principal)

    async def reboot_worker(self, worker_id: str, etag: str = "", principal: str = "") -> worker_pb2.Worker:
        """EC2 reboots a running instance in place: no status change, so nothing is written and no lifecycle
        event made (the caller's audit line names who asked; the autopilot publishes its own decision)."""
        validation.change(worker_id, etag)
        stored = await self.get_stored(worker_id)
        if etag and etag != stored.worker.etag:
            raise Aborted(f"worker {worker_id} changed: etag {stored.worker.etag}, not {etag}")
        if stored.worker.status != model.RUNNING:
            raise FailedPrecondition(f"worker {worker_id} is not running: only a running instance is rebooted")
        await self.ec2.reboot(stored.worker.region, stored.worker.instance_id)
        return stored.worker

    async def set_controller(self, req: registry_service_pb2.SetWorkerControllerRequest) -> worker_pb2.Worker:
        validation.set_controller(req)
        return await self.mutate(req.id, lambda w: model.set_controller(w, req.controller))

    async def terminate_worker(self, worker_id: str, etag: str = "", principal: str = "", force: bool = False
                               ) -> worker_pb2.Worker:
        if self.licences is not None:
            validation.change(worker_id, etag)
            stored = await self.get_stored(worker_id)
            if model.terminate_needed(stored.worker.status):
                await self.licences.release(stored.worker, force=force)
        return await self._transition(worker_id, etag, model.terminate_needed, self.ec2.terminate,
                                      model.TERMINATED, events_pb2.WORKER_EVENT_TYPE_TERMINATED, principal)

    async def _transition(self, worker_id: str, etag: str, needed: Callable[[model.Status], bool],
                          call: Callable[[str, str], Awaitable[model.Status]], target: model.Status,
                          event_type: model.EventType, principal: str) -> worker_pb2.Worker:
        validation.change(worker_id, etag)
        stored = await self.repo.get(worker_id)
        if stored is None:
            raise NotFound(f"worker {worker_id} not found")
        if etag and etag != stored.worker.etag:
            raise Aborted(f"worker {worker_id} changed: etag {stored.worker.etag}, not {etag}")
        try:
            if not needed(stored.worker.status):
                return await self._settle(stored)
        except model.TransitionRefused as exc:
            raise FailedPrecondition(str(exc)) from exc
        asked = _now()
        # EC2 refusing the call (capacity, permissions) raises here: the caller is told, and what was last asked
        # of the worker stays as it was. No retry here: capacity returns on EC2's time, the caller decides.
        new_status = await call(stored.worker.region, stored.worker.instance_id) or stored.worker.status

        def decide(worker: worker_pb2.Worker) -> Change | None:
            if worker.status == model.TERMINATED:
                return None
            new = worker_pb2.Worker()
            new.CopyFrom(worker)
            new.status = new_status
            new.requested_status = target
            new.requested_time.FromDatetime(asked)
            new.ClearField("state_reason")  # EC2's reason for an earlier change says nothing about this one
            kind: model.EventType = event_type
            if target == model.TERMINATED and new_status != model.TERMINATED:
                kind = events_pb2.WORKER_EVENT_TYPE_STATUS_CHANGED  # "terminated" is sent once, when it is
            return Change(new, kind, worker.status, True, principal)

        return await self.mutate(worker_id, decide)

    # --- observations -------------------------------------------------------------------------------------

    async def apply_sample(self, sample: events_pb2.MetricSample) -> bool:
        """Apply an observation; False when the worker is unknown (the sample is dropped)."""
        grace = self.options.missing_grace_seconds
        if not validation.WORKER_ID.fullmatch(sample.worker_id):
            return False
        known = self.view.get(sample.worker_id)
        reason = ""
        if known is not None and model.leaves_requested_path(known.worker, sample):
            reason = await self._state_reason(sample.region, sample.instance_id)
        try:
            await self.mutate(sample.worker_id, lambda w: model.apply_sample(w, sample, grace, reason))
        except NotFound:
            return False
        if self.history is not None:  # after the state: a failure retries both, and both are idempotent
            await self.history.append(sample)
        return True

    async def _state_reason(self, region: str, instance_id: str) -> str:
        """EC2's StateReason of the instance; empty when EC2 cannot be asked now (the sample still applies)."""
        try:
            instance = await self.ec2.describe(region, instance_id)
        except RegistryError as exc:
            log.warning("state reason not read", extra={"instance_id": instance_id, "error": repr(exc)})
            return ""
        return instance.state_reason if instance is not None else ""

    # --- the write path -----------------------------------------------------------------------------------

    async def mutate(self, worker_id: str, decide: Decide) -> worker_pb2.Worker:
        """Read, decide, compare-and-set; on conflict read again and decide again."""
        for attempt in range(CAS_ATTEMPTS):
            if attempt:
                await _backoff(attempt)
            stored = await self.repo.get(worker_id)
            if stored is None:
                raise NotFound(f"worker {worker_id} not found")
            if stored.pending is not None:
                await self._publish_pending(stored)
            change = decide(stored.worker)
            if change is None:
                return stored.worker
            change.worker.update_time.FromDatetime(_now())
            pending = model.pending_event(change, _now()) if change.has_event else None
            try:
                saved = await self.repo.update(change.worker, pending, stored.revision)
            except Conflict:
                continue
            return await self._after_save(saved)
        raise Unavailable(f"worker {worker_id}: too much contention")

    async def _after_save(self, saved: Stored) -> worker_pb2.Worker:
        self.view.apply(saved)
        if saved.pending is None:
            return saved.worker
        if self._on_saved is not None:
            self._on_saved(saved)
        return await self._settle(saved)

    async def _settle(self, stored: Stored) -> worker_pb2.Worker:
        """Publish the event saved with this state, if any, and clear it from the store."""
        if stored.pending is None:
            return stored.worker
        await self._publish_pending(stored)
        try:
            cleared = await self.repo.update(stored.worker, None, stored.revision)
        except Conflict:
            return stored.worker  # someone wrote after us; they published our event before writing
        self.view.apply(cleared)
        return cleared.worker

    async def _publish_pending(self, stored: Stored, *, check_stream: bool = True) -> None:
        assert stored.pending is not None
        await self.publisher.publish(model.build_event(stored.worker, stored.pending), check_stream=check_stream)

    async def sweep_outbox(self, older_than_seconds: float = 0.0) -> int:
        """Publish every saved-but-unconfirmed event (after a crash); return how many were found."""
        now = _now().timestamp()
        found = 0
        for stored in self.view.snapshot():
            pending = stored.pending
            if pending is None or now - pending.occur_time.seconds < older_than_seconds:
                continue
            found += 1
            latest = await self.repo.get(stored.worker.id)
            if latest is not None and latest.pending is not None:
                await self._settle(latest)
        return found
