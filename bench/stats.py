"""Percentiles of measured samples (standard library only)."""

from __future__ import annotations

import math
import statistics


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default 'linear' method)."""
    if not values:
        raise ValueError("no samples")
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    """n, min, p50, p95, p99, max, mean of samples in seconds (rounded to the microsecond)."""
    r = lambda x: round(x, 6)  # noqa: E731
    return {"n": len(values), "min": r(min(values)), "p50": r(percentile(values, 50)),
            "p95": r(percentile(values, 95)), "p99": r(percentile(values, 99)), "max": r(max(values)),
            "mean": r(statistics.fmean(values))}
