"""plan_leases: each replica aims at an even share of the regions, so the regions are spread over the replicas
and every region gets a holder."""

from __future__ import annotations

from collector.domain.leases import plan_leases

REGIONS = {"us-east-1", "eu-west-1", "ap-south-1", "us-west-2"}


def settle(members: list[str], regions: set[str], rounds: int = 10) -> dict[str, str]:
    """Run rounds of every member planning against the current holders, as the replicas do."""
    holders: dict[str, str] = {}
    for _ in range(rounds):
        for me in members:
            held = {r for r, h in holders.items() if h == me}
            plan = plan_leases(me, regions, members, held, holders)
            for region in plan.release:
                del holders[region]
            for region in plan.claim:
                holders.setdefault(region, me)  # a create that loses the race takes nothing
    return holders


def test_a_lone_replica_takes_every_region() -> None:
    assert settle(["a"], REGIONS) == dict.fromkeys(REGIONS, "a")


def test_regions_are_spread_evenly_and_all_held() -> None:
    for count in (2, 3, 4, 5):
        members = [f"r{i}" for i in range(count)]
        holders = settle(members, REGIONS)
        assert holders.keys() == REGIONS
        share = -(-len(REGIONS) // count)
        assert max(list(holders.values()).count(m) for m in members) <= share
        assert len(set(holders.values())) == min(count, len(REGIONS))  # nobody idle while there are regions


def test_a_newcomer_gets_regions_from_a_replica_holding_all() -> None:
    holders = dict.fromkeys(REGIONS, "a")
    plan = plan_leases("a", REGIONS, {"a", "b"}, set(REGIONS), holders)
    assert len(plan.release) == 1 and not plan.claim  # one at a time, no stampede
    assert len(set(settle(["a", "b"], REGIONS).values())) == 2


def test_a_region_without_ticks_is_released_and_a_taken_one_not_claimed() -> None:
    plan = plan_leases("a", {"us-east-1", "eu-west-1"}, {"a", "b"}, {"gone-1"}, {"gone-1": "a", "us-east-1": "b"})
    assert plan.release == ("gone-1",)
    assert plan.claim == ("eu-west-1",)
