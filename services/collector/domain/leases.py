"""Which regions a replica should hold: an even share of the regions with ticks, preferred by rendezvous hashing
so that replicas reach for different regions first and a region stays where it is while membership is stable."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LeasePlan:
    claim: tuple[str, ...]  # free regions to try to take, best first
    release: tuple[str, ...]  # held regions to give up


def preference(me: str, region: str) -> bytes:
    return hashlib.sha256(f"{me}\0{region}".encode()).digest()


def plan_leases(me: str, regions: Collection[str], members: Collection[str], held: Collection[str],
                holders: Mapping[str, str]) -> LeasePlan:
    """What `me` should claim and release, given the regions with ticks, the live replicas (members, with me),
    the regions me holds and every region's current holder (absent: free).

    Each replica holds between floor and ceil of regions / members. Regions no longer ticking are released; a
    replica above the ceiling, or at it while another replica is below the floor, releases one region per round
    (its least preferred), and while a replica is below the floor only replicas below it claim free regions: so
    a newcomer gets its share without a stampede, and nobody idles while another holds more than its share."""
    everyone = {*members, me}
    low, high = len(regions) // len(everyone), math.ceil(len(regions) / len(everyone))
    kept = sorted((r for r in held if r in regions), key=lambda r: preference(me, r))
    counts = {m: sum(1 for r, h in holders.items() if h == m and r in regions) for m in everyone - {me}}
    starving = any(c < low for c in counts.values())
    release = tuple(sorted(r for r in held if r not in regions))
    if len(kept) > high or (starving and len(kept) == high > low):
        release += (kept[-1],)
    room = (high if len(kept) < low or not starving else low) - len(kept)
    free = sorted((r for r in regions if r not in holders and r not in held), key=lambda r: preference(me, r))
    return LeasePlan(claim=tuple(free[:max(0, room)]), release=release)
