"""One durable pull consumer per region, "collector-ticks-<region>" on cml.polls.tick.<region>.>, and a lease
per region that says which replica fetches from it.

Regions are spread over the live replicas (see `RegionLeases` and `plan_leases`); only a region's lease holder
fetches its ticks, so each batch holds the region's whole share of an interval and costs the fewest AWS calls
whatever the number of replicas. A batch is gathered for a short window (schedules may fire spread over the
interval) and polled in a task of its own, so one region's trouble never delays another. A region's ticks are
acked once their samples are stored, or nak'ed with a delay when the poll failed. A replica killed mid-batch
loses nothing: its lease lapses, another replica takes the region and its unacked ticks come back after AckWait."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from cml.monitor.v1 import events_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.consuming import ACK, TERM, Durable, PullConsumer, PullOptions, retry, settle
from cmlmon_core.lifecycle import stopped_within
from cmlmon_core.telemetry import extract_trace, tracer
from cmlmon_core.topology import POLLS_STREAM
from collector import telemetry
from collector.adapters.leases import RegionLeases
from collector.adapters.publisher import SamplePublisher
from collector.codec import observe_time, sample_from_observation, target_from_tick
from collector.domain.leases import plan_leases
from collector.domain.model import Observation, Target
from collector.service.poll import Poller

log = logging.getLogger(__name__)

DURABLE = "collector-ticks"  # the prefix of every region's durable
OBSOLETE_DURABLE = "collector-ticks"  # the one durable all replicas shared, on every region, before region leases
DEADLINE_SHARE_OF_ACK_WAIT = 0.8
LEASE_ROUNDS_PER_LEASE = 3  # leases are renewed this many times per lease time


@dataclass(frozen=True, slots=True)
class TickOptions:
    fetch_batch: int = 1000
    gather_seconds: float = 1.0
    ack_wait_seconds: float = 60.0
    max_in_flight: int = 5000
    nak_delay_seconds: float = 5.0
    shutdown_grace_seconds: float = 5.0
    lease_seconds: float = 15.0
    discover_seconds: float = 15.0


def durable_name(region: str) -> str:
    return f"{DURABLE}-{subjects.token(region, 'region')}"


def ticks_durable(region: str, opts: TickOptions) -> Durable:
    return Durable(stream=POLLS_STREAM, name=durable_name(region), filter_subject=f"cml.polls.tick.{region}.>",
                   update_config=True, config=ConsumerConfig(
                       description=f"collector: poll ticks of {region}, fetched by the replica holding its lease",
                       deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, ack_policy=AckPolicy.EXPLICIT,
                       ack_wait=opts.ack_wait_seconds, max_ack_pending=max(opts.max_in_flight, 1), max_deliver=-1))


@dataclass(frozen=True, slots=True)
class Delivery:
    msg: Msg
    target: Target
    seq: int


class TickConsumer:
    def __init__(self, js: JetStreamContext, poller: Poller, publisher: SamplePublisher, leases: RegionLeases,
                 collector_id: str, opts: TickOptions) -> None:
        self._js = js
        self._poller = poller
        self._publisher = publisher
        self._leases = leases
        self._collector_id = collector_id
        self._opts = opts
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._room = asyncio.Event()
        self._room.set()
        self._regions: dict[str, tuple[asyncio.Event, asyncio.Task[None]]] = {}  # fetching: region -> stop, task
        self.consuming = asyncio.Event()  # the readiness probe reads it: set once the leases are being kept

    async def run(self, stop: asyncio.Event) -> None:
        log.info("keeping region leases", extra={"durable": DURABLE, "collector_id": self._collector_id})
        await self._delete_obsolete_durable()
        try:
            await self._keep_leases(stop)
        finally:
            self.consuming.clear()
            for region_stop, _ in self._regions.values():
                region_stop.set()
            if self._regions:
                await asyncio.wait([task for _, task in self._regions.values()])
            await self._finish_in_flight()
            await self._leases.leave()

    async def _delete_obsolete_durable(self) -> None:
        """No one reads the durable shared before region leases; left on an upgraded stream it keeps every tick
        pending, and an old replica still fetching from it polls every tick a second time. Best effort."""
        try:
            await self._js.delete_consumer(POLLS_STREAM, OBSOLETE_DURABLE)
        except NotFoundError:
            return
        except (NatsError, TimeoutError) as exc:
            log.warning("deleting the obsolete tick durable failed", extra={
                "durable": OBSOLETE_DURABLE, "error": repr(exc)})
            return
        log.info("obsolete tick durable deleted", extra={"durable": OBSOLETE_DURABLE})

    async def _keep_leases(self, stop: asyncio.Event) -> None:
        """Every lease time / 3: announce this replica, renew its leases, release and claim regions as
        `plan_leases` says, then fetch from exactly the regions held."""
        regions: set[str] = set()
        discovered_at = float("-inf")
        every = self._opts.lease_seconds / LEASE_ROUNDS_PER_LEASE
        while not stop.is_set():
            try:
                # while no region is known yet (a new fleet), look every round: its first ticks wait no longer
                if not regions or time.monotonic() - discovered_at >= self._opts.discover_seconds:
                    regions = await self._leases.regions()
                    discovered_at = time.monotonic()
                await self._leases.announce()
                await self._leases.renew()
                members, holders = await self._leases.snapshot()
                plan = plan_leases(self._collector_id, regions, members, self._leases.held.keys(), holders)
                for region in plan.release:
                    await self._leases.release(region)
                for region in plan.claim:
                    await self._leases.claim(region)
                self.consuming.set()
            except Exception as exc:  # NATS away or busy: keep what is held until its lease time runs out
                log.warning("keeping region leases failed", extra={"error": repr(exc) or type(exc).__name__})
                self._leases.expire()
            self._follow_leases(stop)
            await stopped_within(stop, every)

    def _follow_leases(self, stop: asyncio.Event) -> None:
        held = set(self._leases.held)
        for region in list(self._regions):
            region_stop, task = self._regions[region]
            if region not in held or task.done():
                region_stop.set()  # the batch in hand is still polled and settled
                if task.done():
                    del self._regions[region]
                    if not task.cancelled() and task.exception():  # e.g. a refused consumer config
                        log.error("consuming a region's ticks ended", extra={
                            "region": region, "error": repr(task.exception())})
        for region in held - self._regions.keys():
            if stop.is_set():
                return
            region_stop = asyncio.Event()
            task = asyncio.create_task(self._fetch_region(region, region_stop), name=f"ticks-{region}")
            self._regions[region] = (region_stop, task)

    async def _fetch_region(self, region: str, stop: asyncio.Event) -> None:
        async def handle_batch(msgs: list[Msg]) -> None:
            await self._dispatch(msgs)
            await self._wait_for_room(stop)

        consumer = PullConsumer(self._js, ticks_durable(region, self._opts),
                                PullOptions(batch=self._room_left, gather_seconds=self._opts.gather_seconds))
        log.info("consuming poll ticks", extra={"region": region, "durable": consumer.durable.name,
                                                "collector_id": self._collector_id})
        await consumer.run(handle_batch, stop)

    def _room_left(self) -> int:
        return min(self._opts.fetch_batch, self._opts.max_in_flight - self._in_flight)

    async def _wait_for_room(self, stop: asyncio.Event) -> None:
        while self._in_flight >= self._opts.max_in_flight and not stop.is_set():
            self._room.clear()
            await stopped_within(stop, 1.0, wake=self._room)

    async def _dispatch(self, msgs: Sequence[Msg]) -> None:
        by_region: dict[str, list[Delivery]] = {}
        for msg in msgs:
            delivery = await self._accept(msg)
            if delivery:
                by_region.setdefault(delivery.target.region, []).append(delivery)
        for region, deliveries in by_region.items():
            self._track(len(deliveries))
            task = asyncio.create_task(self._poll_region(region, deliveries), name=f"poll-{region}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _accept(self, msg: Msg) -> Delivery | None:
        try:
            tick = messages.decode(events_pb2.PollTick, msg.data, msg.headers)
            target = target_from_tick(tick)
            subjects.metric(target.region, target.worker_id)  # validates both tokens
        except (messages.UndecodableMessage, ValueError) as exc:
            telemetry.TICKS.labels("terminated").inc()
            log.error("undecodable tick terminated", extra={"subject": msg.subject, "error": str(exc)})
            await settle(msg, TERM)
            return None
        meta = msg.metadata
        if meta.num_delivered > 1:
            telemetry.TICKS_REDELIVERED.inc()
        return Delivery(msg=msg, target=target, seq=meta.sequence.stream)

    def _track(self, delta: int) -> None:
        self._in_flight += delta
        telemetry.IN_FLIGHT.set(self._in_flight)
        if self._in_flight < self._opts.max_in_flight:
            self._room.set()

    async def _poll_region(self, region: str, deliveries: list[Delivery]) -> None:
        latest: dict[str, Delivery] = {}
        for d in deliveries:  # a redelivered and a fresh tick of one worker: poll once, ack both
            prev = latest.get(d.target.worker_id)
            if prev is None or d.seq > prev.seq:
                latest[d.target.worker_id] = d
        try:
            with tracer(__name__).start_as_current_span(
                    "collector.poll_region", context=extract_trace(deliveries[0].msg.headers),
                    attributes={"region": region, "ticks": len(deliveries)}), \
                    telemetry.BATCH_SECONDS.labels(region).time():
                # A region that hangs (timeouts, long retries) gives up before AckWait would hand its ticks to
                # another replica while this one still holds them.
                async with asyncio.timeout(self._opts.ack_wait_seconds * DEADLINE_SHARE_OF_ACK_WAIT):
                    observations = await self._poller.poll(region, [d.target for d in latest.values()])
                await self._publish(region, observations, latest, deliveries)
        except asyncio.CancelledError:
            await asyncio.shield(self._nak(deliveries, delay=None))
            raise
        except Exception as exc:  # no AWS or NATS trouble may end the replica: the ticks come back later
            log.warning("polling a region failed; ticks nak'ed", extra={
                "region": region, "ticks": len(deliveries), "error": str(exc) or repr(exc)})
            await self._nak(deliveries, delay=self._opts.nak_delay_seconds)
        finally:
            self._track(-len(deliveries))

    async def _publish(self, region: str, observations: list[Observation], latest: dict[str, Delivery],
                       deliveries: list[Delivery]) -> None:
        now = datetime.now(UTC)
        stamp = observe_time(now)
        samples = [sample_from_observation(o, stamp, self._collector_id) for o in observations]
        outcomes = await self._publisher.publish([(s, f"{s.worker_id}:{latest[s.worker_id].seq}") for s in samples])
        failed = {s.worker_id for s, o in zip(samples, outcomes, strict=True) if o is not None}
        if failed:
            log.warning("samples not stored; their ticks nak'ed", extra={"region": region, "count": len(failed)})
        telemetry.SAMPLES.labels(region).inc(len(samples) - len(failed))
        telemetry.INSTANCES_MISSING.inc(sum(1 for o in observations if o.state.missing))
        acked = 0
        for d in deliveries:
            if d.target.worker_id in failed:
                await self._nak([d], delay=self._opts.nak_delay_seconds)
            else:
                telemetry.POLL_LAG.observe(max(0.0, (now - d.msg.metadata.timestamp).total_seconds()))
                await settle(d.msg, ACK)
                acked += 1
        telemetry.TICKS.labels("acked").inc(acked)

    async def _nak(self, deliveries: Sequence[Delivery], delay: float | None) -> None:
        for d in deliveries:
            await settle(d.msg, retry(delay))
            telemetry.TICKS.labels("naked").inc()

    async def _finish_in_flight(self) -> None:
        """Give in-flight polls the grace period to finish; the rest are cancelled, which naks their ticks."""
        if not self._tasks:
            return
        log.info("finishing in-flight polls", extra={"tasks": len(self._tasks)})
        _, pending = await asyncio.wait(set(self._tasks), timeout=self._opts.shutdown_grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            log.info("in-flight polls cancelled and nak'ed", extra={"tasks": len(pending)})

