"""Percentiles, the one implementation every report, evaluation and benchmark uses (standard library only).

`q` is on the 0..100 scale everywhere. Linear interpolation between the closest ranks (numpy's default)
suits benchmarks and evaluations over a few dozen values; the cost report uses `nearest=True`, the
nearest-rank method, so a reported p95 latency is one that a request really had.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float | None], q: float, *, nearest: bool = False) -> float | None:
    """The q-th percentile (q in 0..100) of the values that are not None or NaN; None when there are none."""
    data = sorted(v for v in values if v is not None and not math.isnan(v))
    if not data:
        return None
    if nearest:
        return data[max(1, math.ceil(q / 100 * len(data))) - 1]
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)
