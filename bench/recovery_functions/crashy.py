"""Handlers for bench/recovery.py: each records (event id, worker, attempt, start, end) as a line."""
import json
import os
import time


def _write(event, context, **extra) -> None:
    with open(os.environ["RECOVERY_OUT"], "a") as f:
        f.write(json.dumps({"id": event["id"], "worker": context.log_stream_name,
                            "attempt": context.attempt, **extra}) + "\n")


def slow(event, context):
    """Runs long enough to be killed in the middle."""
    _write(event, context, phase="start", t=time.time())
    time.sleep(event["detail"].get("seconds", 2.0))
    _write(event, context, phase="end", t=time.time())


def quick(event, context):
    _write(event, context, phase="end", t=time.time())
