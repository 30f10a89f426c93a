"""The arithmetic every part of the report shares: one percentile method, safe numbers, shares.

Percentiles are nearest-rank everywhere: the p-th percentile of n values is the value at rank
ceil(p/100 * n) of the sorted values. It is always a value that was observed (never interpolated),
so a p99 in the report is a duration some execution really had.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final

PERCENTILE_METHOD: Final = "nearest-rank"


def finite(value: object) -> float | None:
    """`value` as a float when it is a finite real number (bools and strings are not), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of `values` (need not be sorted); None for no values."""
    ordered = sorted(v for v in values if finite(v) is not None)
    return percentile_of_sorted(ordered, p)


def percentile_of_sorted(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of values already sorted ascending; None for no values."""
    if not ordered:
        return None
    rank = math.ceil(min(max(p, 0.0), 100.0) / 100.0 * len(ordered))
    return ordered[max(rank, 1) - 1]


def share(part: float, whole: float) -> float:
    """part / whole clamped to [0, 1]; 0 when the whole is nothing."""
    if whole <= 0 or not math.isfinite(whole) or not math.isfinite(part):
        return 0.0
    return min(max(part / whole, 0.0), 1.0)


def mean(values: Iterable[float]) -> float | None:
    items = list(values)
    return sum(items) / len(items) if items else None


def order_statistics(ordered: Sequence[float], limit: int) -> tuple[float, ...]:
    """At most `limit` values that keep the shape of the sorted `ordered`: evenly spaced ranks.

    The first and last values (min and max) are always kept, so plots show the true range.
    """
    n = len(ordered)
    if n <= limit:
        return tuple(ordered)
    if limit <= 1:
        return (ordered[-1],)
    step = (n - 1) / (limit - 1)
    return tuple(ordered[round(i * step)] for i in range(limit))


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """Upper bound of the bucket that holds the q-quantile (0..1) of a cumulative histogram.

    `buckets` are (upper bound, cumulative count), +Inf included. The answer is an upper bound on
    the true quantile; when the quantile lies in the +Inf bucket the largest finite bound is
    returned (then it is a lower bound). None when nothing was observed.
    """
    ordered = sorted((bound, count) for bound, count in buckets if not math.isnan(bound))
    if not ordered or ordered[-1][1] <= 0:
        return None
    target = q * ordered[-1][1]
    finite_bounds = [bound for bound, _ in ordered if math.isfinite(bound)]
    for bound, count in ordered:
        if count >= target and count > 0:
            if math.isfinite(bound):
                return bound
            break
    return finite_bounds[-1] if finite_bounds else None
