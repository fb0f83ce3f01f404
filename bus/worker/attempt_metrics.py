"""The metrics of one attempt, from when its handler begins (a queued sync call: at its turn)
to its end, with the Prometheus children looked up once per target."""
from __future__ import annotations

import functools
import time
from typing import Any

import msgspec

from bus.observe import metrics


class TargetMetrics(msgspec.Struct):
    invocations: Any
    ingestion_to_start: Any
    concurrent: Any
    duration: Any
    attempt_duration: Any  # per target, every kind (duration is per function)
    complete_success: Any
    complete_failure: Any


@functools.lru_cache(maxsize=4096)  # labels() is a locked dict lookup; once per target is enough
def target_metrics(name: str, target: str) -> TargetMetrics:
    """`name` is the function (the `function` label); `target` the target key."""
    return TargetMetrics(
        metrics.INVOCATIONS.labels(name, target), metrics.INGESTION_TO_START.labels(target),
        metrics.CONCURRENT.labels(name), metrics.HANDLER_DURATION.labels(name), metrics.ATTEMPT_DURATION.labels(target),
        metrics.INGESTION_TO_COMPLETE.labels(target, "success"), metrics.INGESTION_TO_COMPLETE.labels(target, "failure"),
    )


class AttemptMetrics:
    """Counts an attempt when it begins, and its duration and concurrency until it ends."""

    __slots__ = ("m", "ingested", "started")

    def __init__(self, m: TargetMetrics, ingested: float):
        self.m, self.ingested, self.started = m, ingested, 0.0

    def begin(self) -> None:
        self.m.invocations.inc()
        self.m.ingestion_to_start.observe(max(0.0, time.time() - self.ingested))
        self.m.concurrent.inc()
        self.started = time.perf_counter()

    def end(self) -> None:
        if self.started:
            self.m.concurrent.dec()
            seconds = time.perf_counter() - self.started
            self.m.duration.observe(seconds)
            self.m.attempt_duration.observe(seconds)

    def complete(self, ok: bool) -> None:
        (self.m.complete_success if ok else self.m.complete_failure).observe(max(0.0, time.time() - self.ingested))
