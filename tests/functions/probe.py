"""Test handlers: each records its call (event, context, pid) as a JSON line in $BUSWAY_TEST_OUT."""
import asyncio
import json
import os
from pathlib import Path


def _record(name, event, context, **extra):
    out = Path(os.environ["BUSWAY_TEST_OUT"]) / "calls.jsonl"
    line = json.dumps({
        "handler": name, "event": event, "pid": os.getpid(),
        "context": {
            "aws_request_id": context.aws_request_id, "function_name": context.function_name,
            "invoked_function_arn": context.invoked_function_arn, "attempt": context.attempt,
            "rule_name": context.rule_name, "remaining_ms": context.get_remaining_time_in_millis(),
            "worker": context.log_stream_name,
        },
        **extra,
    })
    with open(out, "a") as f:
        f.write(line + "\n")


def record(event, context):
    _record("record", event, context)
    return {"ok": True}


async def record_async(event, context):
    await asyncio.sleep(0)
    _record("record_async", event, context)
    return {"ok": True}


def fail(event, context):
    _record("fail", event, context)
    raise RuntimeError("always fails")


def _count(event):
    """How many times this event id has been seen by `flaky` (a file per event id)."""
    path = Path(os.environ["BUSWAY_TEST_OUT"]) / f"seen-{event['id']}"
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


def flaky(event, context):
    """Fails the first two attempts of each event, then succeeds."""
    n = _count(event)
    _record("flaky", event, context, n=n)
    if n <= 2:
        raise ValueError(f"flaky failure {n}")
    return {"n": n}


def spin(event, context):
    """A sync handler stuck in a loop: only a kill stops it."""
    _record("spin", event, context)
    while True:
        pass


async def sleep_async(event, context):
    _record("sleep_async", event, context)
    await asyncio.sleep(60)


def slow(event, context):
    """Takes a while; records its start and its end."""
    import time
    start = time.time()
    _record("slow_start", event, context, t=start)
    time.sleep(float(event["detail"].get("seconds", 1.0)))
    _record("slow", event, context, start=start, end=time.time())
    return {"slept": True}


def kill_worker(event, context):
    """Kills the worker running it (its slot's parent), like an OOM kill would."""
    import signal
    _record("kill_worker", event, context)
    os.kill(os.getppid(), signal.SIGKILL)
    import time
    time.sleep(10)
