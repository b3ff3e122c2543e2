"""The one timing rule the speed benchmarks share."""
from __future__ import annotations

import time


def best(fn, repeats: int, min_seconds: float = 0.2) -> float:
    """Seconds per call of ``fn``: one warm-up call, then the best of ``repeats`` timings,
    each averaging as many calls as fit in ``min_seconds`` (at least one). The best, not
    the mean, because on a shared machine other work only ever makes a call slower."""
    fn()
    times = []
    for _ in range(repeats):
        calls, t = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - t
            if elapsed >= min_seconds:
                break
        times.append(elapsed / calls)
    return min(times)
