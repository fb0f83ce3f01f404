"""arq worker settings for bench/e2e.py: `python -m arq arq_noop.WorkerSettings --custom-log-dict arq_noop.LOGGING`.

One worker, max_jobs 10, on the Redis in BENCH_REDIS_URL. `noop` does nothing; `record`
writes its start time like noop.record_async (latency phase). LOGGING keeps arq's per-job
INFO lines off, as busway (--log-level WARNING) and saq (its default, ERROR) run in the bench.
POLL_DELAY comes from BENCH_ARQ_POLL_DELAY (arq's default is 0.5 s).
"""
from __future__ import annotations

import os
import time

from arq.connections import RedisSettings
from noop import write_start


async def noop(ctx):
    return None


async def record(ctx, tag):
    write_start(tag, time.time())


class WorkerSettings:
    functions = [noop, record]
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])
    max_jobs = 10
    poll_delay = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.5"))


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {"arq": {"handlers": ["stderr"], "level": "WARNING"}},
}
