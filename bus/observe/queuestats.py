"""Queue gauges set at scrape time: depth, pending, delayed, oldest age, DLQ depth, and what
each target is (busway_target_info).

The store reads every target in one pipelined round trip (bus.store.queue.Queue.stats),
so scraping every 5 s stays cheap.
"""
from __future__ import annotations

import time

from bus.observe import metrics
from bus.observe.targets import update_target_info
from bus.store.deliveries import TargetRecord
from bus.store.queue import Queue


async def update_queue_gauges(queue: Queue, targets: list[TargetRecord]) -> None:
    update_target_info(targets)
    now = time.time()
    for key, stats in (await queue.stats(targets)).items():
        metrics.QUEUE_DEPTH.labels(key).set(stats.depth)
        metrics.QUEUE_PENDING.labels(key).set(stats.pending)
        metrics.QUEUE_DELAYED.labels(key).set(stats.delayed)
        metrics.OLDEST_AGE.labels(key).set(max(0.0, now - stats.oldest) if stats.oldest else 0.0)
    for name, depth in (await queue.dead_letter_depths()).items():
        metrics.DLQ_DEPTH.labels(name).set(depth)
