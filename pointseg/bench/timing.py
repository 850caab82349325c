"""Timing that survives a drifting machine: the callables take turns, call by call."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def alternating(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 0) -> dict[str, float]:
    """Median seconds per call of each callable, the callables taking turns.

    On this shared 2-core machine the speed drifts by ±30 % within a minute; timing each side in its own block
    puts that drift into the ratio, alternating shares it between both sides. ``warmup`` calls of each come first
    and are not timed.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns.items())
    for r in range(repeats):
        for k, fn in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: float(statistics.median(v)) for k, v in times.items()}
