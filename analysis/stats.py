"""Small statistics for reports: mean with a t-based 95 % confidence interval, paired differences."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the CI, n); the half-width is NaN with fewer than 2 values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    if v.size < 2:
        return float(v.mean()), float("nan"), 1
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return float(v.mean()), float(half), int(v.size)


def fmt(mean: float, half: float, n: int, digits: int = 3) -> str:
    if n == 0:
        return "—"
    if not math.isfinite(half):
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} ± {half:.{digits}f} (n={n})"
