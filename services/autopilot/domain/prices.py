"""Hourly on-demand prices (USD, Linux, us-east-1) of the instance types CML workers usually run on, and the
cost of a stretch of time. The table is a default: PRICES_FILE (YAML or JSON mapping type -> price) overrides
or extends it, since prices differ per region and change."""

from __future__ import annotations

from collections.abc import Mapping

SHIPPED_PRICES: dict[str, float] = {
    "c5.metal": 4.08,
    "c5n.metal": 3.888,
    "c5d.metal": 4.608,
    "m5.metal": 4.608,
    "m5zn.metal": 3.9641,
    "m5n.metal": 5.712,
    "m6i.metal": 6.144,
    "c6i.metal": 5.44,
    "r5.metal": 6.048,
    "z1d.metal": 4.464,
    "i3.metal": 4.992,
    "c5.2xlarge": 0.34,
    "c5.4xlarge": 0.68,
    "c5.9xlarge": 1.53,
    "c5.12xlarge": 2.04,
    "c5.18xlarge": 3.06,
    "c5.24xlarge": 4.08,
    "m5.2xlarge": 0.384,
    "m5.4xlarge": 0.768,
    "m5.8xlarge": 1.536,
    "t3.large": 0.0832,
    "t3.xlarge": 0.1664,
    "t3.2xlarge": 0.3328,
}


def price_table(overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    table = dict(SHIPPED_PRICES)
    for kind, price in (overrides or {}).items():
        if price < 0:
            raise ValueError(f"price of {kind} is negative")
        table[kind] = float(price)
    return table


def cost(prices: Mapping[str, float], instance_type: str, seconds: float) -> float | None:
    """What `seconds` of instance_type cost; None when the type is not in the table (never guessed as 0)."""
    hourly = prices.get(instance_type)
    return None if hourly is None else round(hourly * max(seconds, 0.0) / 3600.0, 2)


def duration(seconds: float) -> str:
    """A span as a notification says it: seconds under two minutes, minutes under two hours, then hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
