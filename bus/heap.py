"""The garbage collector's settings for busway's long-running processes (serve, worker, tail).

CPython's default (a young-generation collection every 700 net container allocations) fired
about once per 100 deliveries in a draining worker, and each collection also traversed whatever
young containers referenced; a full collection walked the whole heap of imported modules
(~60k objects, 20-30 ms: a pause longer than the latency goal's maximum). With a young
threshold of 10,000 the bursts of one loop turn are freed by reference counting before a
collection comes, and once startup is over its objects are frozen (gc.freeze) out of every
later collection; cycles are still collected, only less often. Measured on the issue-16 machine:
the worker's time in the collector fell from ~9 % of its CPU to under 1 % (docs/benchmarks.md).
"""
from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # net allocations of containers between young collections (default 700)
SETTLE_SECONDS = 1.0  # after start: imports done and startup objects built, so they are frozen


def tune() -> None:
    """Collect less often (the process keeps its default later generations' ratios)."""
    gc.set_threshold(YOUNG_THRESHOLD, 10, 10)


def settle() -> None:
    """Freeze what exists now (the startup heap) out of every later collection.

    No gc.collect() first: on a busy 2-core machine that full collection took 40-120 ms, a
    pause in the first seconds of serving; the startup garbage it would free stays, a bounded
    few hundred kilobytes at most."""
    gc.freeze()
