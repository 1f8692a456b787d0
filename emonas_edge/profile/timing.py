"""The one timing method: warm up, then time a fixed number of calls with a monotonic clock.

Every latency figure the project prints (benchmarks, ``profile``, ``export --precision auto``)
comes from :func:`time_calls`, so figures are comparable. Outliers are reported (max, p99),
never dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Timing:
    iters: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(ns: np.ndarray) -> Timing:
    ms = np.asarray(ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return Timing(len(ms), float(ms.min()), float(ms.mean()), float(p50), float(p90), float(p99), float(ms.max()))


def time_samples(fn: Callable[[], object], iters: int = 1000, warmup: int = 100) -> np.ndarray:
    """Per-call nanoseconds of ``iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = np.empty(iters, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(iters):
        t = clock()
        fn()
        out[i] = clock() - t
    return out


def time_calls(fn: Callable[[], object], iters: int = 1000, warmup: int = 100) -> Timing:
    return summarize(time_samples(fn, iters, warmup))


def time_interleaved(
    fns: dict[str, Callable[[], object]], iters: int = 2000, warmup: int = 200, block: int = 100
) -> dict[str, Timing]:
    """Time several candidates in alternating blocks, so drift (other load, clocks) hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[int]] = {k: [] for k in fns}
    clock = time.perf_counter_ns
    done = 0
    while done < iters:
        n = min(block, iters - done)
        for k, fn in fns.items():
            buf = samples[k]
            for _ in range(n):
                t = clock()
                fn()
                buf.append(clock() - t)
        done += n
    return {k: summarize(np.asarray(v)) for k, v in samples.items()}
