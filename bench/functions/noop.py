"""No-op handlers for bench/e2e.py, loaded by `bus worker --functions bench/functions`.

`handler` / `handler_async` do nothing: the throughput phases measure busway, not the handler.
`record` / `record_async` (latency phases only) append "<event id> <time.time()>" to the file
named by BENCH_LATENCY_FILE as their first act: that is the "handler start" time. One O_APPEND
write(2) per call, so lines from concurrent processes (sync slots) never interleave.
"""
from __future__ import annotations

import os
import time

_fd: tuple[int, int] | None = None  # (pid, fd): a forked slot opens its own


def write_start(key: str, started: float) -> None:
    global _fd
    if _fd is None or _fd[0] != os.getpid():
        _fd = (os.getpid(), os.open(os.environ["BENCH_LATENCY_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
    os.write(_fd[1], f"{key} {started:.6f}\n".encode())


def handler(event, context):
    return None


async def handler_async(event, context):
    return None


def record(event, context):
    write_start(event["id"], time.time())


async def record_async(event, context):
    write_start(event["id"], time.time())
