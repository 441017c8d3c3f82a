"""Batching plans at AWS's limits: which ids go in which DescribeInstanceStatus call, and which queries in
which GetMetricData call."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from collector.domain.model import Target

T = TypeVar("T")

DESCRIBE_MAX_IDS = 100  # DescribeInstanceStatus: InstanceIds per call
METRIC_DATA_MAX_QUERIES = 500  # GetMetricData: MetricDataQueries per call
QUERIES_PER_TARGET = 4  # CPU, memory, network in, network out

_INSTANCE_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_ID_IN_MESSAGE = re.compile(r"i-[0-9a-zA-Z]+")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    if size < 1:
        raise ValueError("chunk size must be positive")
    for start in range(0, len(items), size):
        yield items[start:start + size]


def is_instance_id(value: str) -> bool:
    return bool(_INSTANCE_ID.match(value))


def split_malformed(instance_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """(well-formed unique ids in first-seen order, malformed ids): a malformed id would fail its whole call."""
    good: dict[str, None] = {}
    bad: dict[str, None] = {}
    for iid in instance_ids:
        (good if is_instance_id(iid) else bad)[iid] = None
    return list(good), list(bad)


def ids_named_in_error(message: str, asked: Iterable[str]) -> set[str]:
    """The asked ids an `InvalidInstanceID.NotFound` message names ("The instance IDs 'i-1, i-2' do not
    exist"); empty when the message names none of them."""
    named = set(_ID_IN_MESSAGE.findall(message))
    return named & set(asked)


def describe_plan(instance_ids: Sequence[str]) -> list[Sequence[str]]:
    return list(chunks(instance_ids, DESCRIBE_MAX_IDS))


def metric_plan(targets: Sequence[Target]) -> list[Sequence[Target]]:
    """Targets per GetMetricData call: each target costs QUERIES_PER_TARGET queries."""
    return list(chunks(targets, METRIC_DATA_MAX_QUERIES // QUERIES_PER_TARGET))
