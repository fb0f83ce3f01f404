"""saq worker settings for bench/e2e.py: `python -m saq saq_noop.settings` with this dir on PYTHONPATH.

One worker, concurrency 10, on the Redis in BENCH_REDIS_URL. `noop` does nothing; `record`
writes its start time like noop.record_async (latency phase).
"""
from __future__ import annotations

import os
import time

from noop import write_start
from saq import Queue


async def noop(ctx):
    return None


async def record(ctx, *, tag):
    write_start(tag, time.time())


settings = {
    "queue": Queue.from_url(os.environ["BENCH_REDIS_URL"]),
    "functions": [noop, record],
    "concurrency": 10,
}
