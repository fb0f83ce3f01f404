"""Handlers for the Lambda API tests (tests/test_lambda_invoke.py)."""
import asyncio
import os
import time

from probe import _record


def echo(event, context):
    return {"event": event, "request_id": context.aws_request_id, "function": os.environ.get("AWS_LAMBDA_FUNCTION_NAME")}


async def echo_async(event, context):
    await asyncio.sleep(0)
    return {"event": event, "async": True}


def boom(event, context):
    raise ValueError("boom: " + str(event.get("why", "no reason")))


def chatty(event, context):
    print("hello from chatty")
    print("x" * 5000)
    print("the end")
    return "said it"


def sleepy(event, context):
    time.sleep(float(event.get("seconds", 5)))
    return "woke"


def recorded(event, context):
    _record("recorded", event, context)
    return {"recorded": True}


def failing(event, context):
    _record("failing", event, context)
    raise RuntimeError("fails every time")


def secret_a(event, context):
    return {"SECRET": os.environ.get("SECRET"), "ONLY_A": os.environ.get("ONLY_A")}


def secret_b(event, context):
    return {"SECRET": os.environ.get("SECRET"), "ONLY_A": os.environ.get("ONLY_A")}


def not_json(event, context):
    return object()


def batch(event, context):
    """An event source mapping's handler: records each record's event; reports the ones marked to fail."""
    import json as _json
    failures = []
    for record in event["Records"]:
        inner = _json.loads(record["body"])
        _record("batch", inner, context, receive_count=record["attributes"]["ApproximateReceiveCount"],
                source=record["eventSource"], arn=record["eventSourceARN"])
        if inner["detail"].get("fail"):
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


def client(event, context):
    cc = context.client_context
    return {"custom": cc.custom if cc else None, "env": cc.env if cc else None}


def slow_batch(event, context):
    """Half a second per batch, recording when it ran (for maximum_concurrency)."""
    started = time.time()
    time.sleep(0.5)
    _record("slow_batch", {"n": len(event["Records"])}, context, start=started, end=time.time())


def peek_env(event, context):
    return {name: os.environ.get(name) for name in event["names"]}
