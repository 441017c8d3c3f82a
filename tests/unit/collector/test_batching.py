from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.domain import batching
from collector.domain.model import Target


@given(st.integers(min_value=0, max_value=2500))
def test_describe_plan_respects_the_100_id_limit_and_keeps_every_id(n: int) -> None:
    ids = [f"i-{i:08x}" for i in range(n)]
    plan = batching.describe_plan(ids)
    assert all(1 <= len(chunk) <= 100 for chunk in plan)
    assert [i for chunk in plan for i in chunk] == ids
    assert len(plan) == -(-n // 100)


@given(st.integers(min_value=0, max_value=2500))
def test_metric_plan_respects_the_500_query_limit(n: int) -> None:
    targets = [Target(worker_id=f"w{i}", region="us-east-1", instance_id=f"i-{i:08x}") for i in range(n)]
    plan = batching.metric_plan(targets)
    assert all(1 <= len(chunk) * batching.QUERIES_PER_TARGET <= 500 for chunk in plan)
    assert [t for chunk in plan for t in chunk] == targets


def test_thousand_running_workers_in_one_region_cost_at_most_20_calls() -> None:
    targets = [Target(worker_id=f"w{i}", region="us-east-1", instance_id=f"i-{i:08x}") for i in range(1000)]
    calls = len(batching.describe_plan([t.instance_id for t in targets])) + len(batching.metric_plan(targets))
    assert calls == 18  # 10 DescribeInstanceStatus + 4000 queries in 8 GetMetricData


def test_chunks_refuses_non_positive_size() -> None:
    with pytest.raises(ValueError):
        list(batching.chunks([1], 0))


@pytest.mark.parametrize("good", ["i-12345678", "i-0123456789abcdef0"])
def test_well_formed_instance_ids(good: str) -> None:
    assert batching.is_instance_id(good)


@pytest.mark.parametrize("bad", ["", "i-", "i-1234567", "i-123456789", "i-0123456789ABCDEF0", "ami-12345678",
                                 "i-12345678 ", "bogus", "i-0123456789abcdef01"])
def test_malformed_instance_ids(bad: str) -> None:
    assert not batching.is_instance_id(bad)


def test_split_malformed_dedupes_and_keeps_order() -> None:
    good, bad = batching.split_malformed(["i-22222222", "x", "i-11111111", "i-22222222", "x"])
    assert good == ["i-22222222", "i-11111111"]
    assert bad == ["x"]


@pytest.mark.parametrize(("message", "named"), [
    ("The instance ID 'i-11111111' does not exist", {"i-11111111"}),
    ("The instance IDs 'i-11111111, i-0123456789abcdef0' do not exist", {"i-11111111", "i-0123456789abcdef0"}),
    ("The instance ID 'i-99999999' does not exist", set()),  # not one we asked about
    ("Something else went wrong", set()),
])
def test_ids_named_in_not_found_errors(message: str, named: set[str]) -> None:
    asked = ["i-11111111", "i-0123456789abcdef0", "i-22222222"]
    assert batching.ids_named_in_error(message, asked) == named
