"""Timing helper shared by the benchmarks: interleaved, rotated rounds of *paired* calls.

Why paired: on a CPU the memory traffic of one implementation (dirty cache lines still
being written back, freshly freed buffers, page faults of a new allocation) lands on
whichever function runs next. In a plain round-robin the function that follows
``flax.linen.Dropout`` (which materialises a mask and its bits) was measured up to 1.3x
slower than when timed alone. Calling the *same* function once, untimed, right before
each timed call makes every timed call start from the state its own function leaves
behind, so the figures are the same alone and interleaved (evidence:
``benchmarks/crosstalk.py`` and ``benchmarks/results/crosstalk-cpu.md``).

The benchmarks import this module as a sibling (``benchmarks/`` is on ``sys.path`` when
a script in it runs).
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import jax


def block(out: Any, sync: Callable[[], None] | None = None) -> None:
    """Wait until every array in ``out`` is computed (and run ``sync``, e.g. a CUDA sync)."""
    for leaf in jax.tree_util.tree_leaves(out):
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
    if sync is not None:
        sync()


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakRSS:
    """Samples the resident set size in a thread while active; ``peak - start`` in bytes."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            r = _rss()
            if r is not None and self.peak is not None:
                self.peak = max(self.peak, r)

    def __enter__(self) -> PeakRSS:
        if self.start is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        r = _rss()
        if r is not None and self.peak is not None:
            self.peak = max(self.peak, r)

    @property
    def gained(self) -> int | None:
        return None if self.start is None or self.peak is None else self.peak - self.start


class _NoRSS:
    gained = None

    def __enter__(self) -> _NoRSS:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def time_paired(
    fns: dict[str, Callable[[], Any]],
    reps: int,
    min_sample_s: float = 0.02,
    *,
    paired: bool = True,
    sync: Callable[[], None] | None = None,
    track_rss: bool = False,
) -> dict[str, dict[str, Any]]:
    """Median wall time per call of each thunk: interleaved, rotated rounds of paired calls.

    In every round each thunk is called once untimed and then, immediately, timed (``inner``
    back-to-back calls, more than 1 only when one call is shorter than ``min_sample_s``;
    ``inner`` is set by the untimed call of the first round, which also warms up). The
    order of the thunks is rotated every round. Also records the process CPU time (all
    threads) of each sample and the time of the very first call; with ``track_rss`` the
    resident memory the process gained during each pair of calls (the maximum over rounds).

    ``paired=False`` calls every thunk once up front instead and then drops the untimed
    calls (the plain round-robin, which suffers cross-talk; kept only to measure it).
    ``sync`` runs after each call is blocked on (torch's CUDA synchronisation).
    """
    names = list(fns)
    inner: dict[str, int] = {}
    first: dict[str, float] = {}
    samples: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    rss: dict[str, int | None] = {n: None for n in names}

    def untimed_call(name: str) -> None:
        t0 = time.perf_counter()
        block(fns[name](), sync)
        untimed = time.perf_counter() - t0
        if name not in inner:
            first[name] = untimed
            inner[name] = max(1, math.ceil(min_sample_s / max(untimed, 1e-6)))

    if not paired:  # warm every thunk up front, then time the plain round-robin
        for name in names:
            untimed_call(name)
    for r in range(reps):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = fns[name]
            with PeakRSS() if track_rss else _NoRSS() as peak:
                if paired:
                    untimed_call(name)  # the same function, right before its timed call
                n = inner[name]
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(n):
                    out = fn()
                block(out, sync)
                samples[name].append((time.perf_counter() - t0) / n)
                cpu[name].append((time.process_time() - c0) / n)
                del out
            if peak.gained is not None:
                rss[name] = max(rss[name] or 0, peak.gained)
    return {
        n: {
            "median_s": statistics.median(s),
            "min_s": min(s),
            "cpu_median_s": statistics.median(cpu[n]),
            "first_call_s": first[n],
            "samples_s": s,
            "cpu_samples_s": cpu[n],
            "inner": inner[n],
            "reps": len(s),
            **({"rss_gained_bytes": rss[n]} if track_rss else {}),
        }
        for n, s in samples.items()
    }
