"""The no-op handler of bench/cluster.py, loaded by `bus worker --functions bench/functions`.

`handler` does nothing, except for events whose detail has `"t": 1` (the open-loop latency
phase only): for those it appends "<event id> <time.time()>" to BENCH_LATENCY_FILE as its first
act, like noop.record_async. One handler for both phases, so a broker and worker pair serves the
throughput phase and the latency phase without a restart.
"""
from __future__ import annotations

import time

from noop import write_start


async def handler(event, context):
    detail = event.get("detail")
    if isinstance(detail, dict) and detail.get("t"):
        write_start(event["id"], time.time())
