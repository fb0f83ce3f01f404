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
