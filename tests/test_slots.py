"""Slots: sync handlers run in forked processes, one call at a time, killable on timeout."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bus.functions import FunctionLoader
from bus.slots import SlotPool

HANDLERS = '''
import os, time

def size(event, context):
    return {"bytes": len(event["blob"]), "request": context.aws_request_id, "pid": os.getpid()}

def echo(event, context):
    return event

def hang(event, context):
    while True:
        time.sleep(0.01)
'''

CONTEXT = dict(request_id="req-1", function="f", rule="r", target="t", bus="default", attempt=1, memory=128,
               worker="w")


def run(tmp_path: Path, body):
    (tmp_path / "slotfns.py").write_text(HANDLERS)
    pool = SlotPool(FunctionLoader(tmp_path))

    async def main():
        try:
            return await body(pool)
        finally:
            await pool.close()
    try:
        return asyncio.run(main())
    finally:
        sys.modules.pop("slotfns", None)


def test_an_event_larger_than_the_pipe_buffer_reaches_the_handler_whole(tmp_path):
    blob = "x" * 300_000
    event = ('{"blob": "%s"}' % blob).encode()
    reply = run(tmp_path, lambda pool: pool.run("slotfns.size", event, CONTEXT, 5.0))
    assert reply.ok and b'"bytes":300000' in reply.result and b'"request":"req-1"' in reply.result


def test_a_result_larger_than_the_pipe_buffer_comes_back_whole(tmp_path):
    event = ('{"blob": "%s"}' % ("y" * 300_000)).encode()
    reply = run(tmp_path, lambda pool: pool.run("slotfns.echo", event, CONTEXT, 5.0))
    assert reply.ok and len(reply.result) > 300_000


def test_concurrent_calls_each_get_their_own_reply(tmp_path):
    async def body(pool):
        events = [('{"blob": "%s"}' % ("z" * n)).encode() for n in range(50)]
        return await asyncio.gather(*[pool.run("slotfns.size", e, CONTEXT, 5.0) for e in events])
    replies = run(tmp_path, body)
    assert [r.ok for r in replies] == [True] * 50
    assert [f'"bytes":{n},' in r.result.decode() for n, r in enumerate(replies)] == [True] * 50


def test_a_slot_that_overruns_is_killed_and_the_next_call_gets_a_fresh_one(tmp_path):
    async def body(pool):
        late = await pool.run("slotfns.hang", b'{}', CONTEXT, 0.3)
        after = await pool.run("slotfns.size", b'{"blob": "ok"}', CONTEXT, 5.0)
        return late, after
    late, after = run(tmp_path, body)
    assert (late.ok, late.kind, late.error_type) == (False, "timeout", "Sandbox.Timedout")
    assert after.ok and b'"bytes":2' in after.result
