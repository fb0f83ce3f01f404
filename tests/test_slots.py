"""Slots: handlers run in forked processes, killable on timeout; sync ones one call at a time,
async ones side by side in the slot's own event loop."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bus.worker.functions import FunctionLoader
from bus.worker.slot import Call
from bus.worker.slots import SlotPool

HANDLERS = '''
import asyncio, os, time

async def anap(event, context):
    await asyncio.sleep(event["s"])
    return os.getpid()

async def ablock(event, context):
    time.sleep(event["s"])
    return os.getpid()

def runs_a_loop(event, context):
    return asyncio.run(anap(event, context))

def wraps_a_coroutine(event, context):
    return anap(event, context)

def size(event, context):
    return {"bytes": len(event["blob"]), "request": context.aws_request_id, "pid": os.getpid()}

def echo(event, context):
    return event

def nap(event, context):
    time.sleep(event["s"])
    return os.getpid()

def hang(event, context):
    while True:
        time.sleep(0.01)
'''

CONTEXT = dict(request_id="req-1", function="f", rule="r", target="t", bus="default", attempt=1, memory=128,
               worker="w")


def run(tmp_path: Path, body, modules: dict[str, str] | None = None):
    """`body(pool)` on a fresh pool whose functions directory holds `modules` (name -> source)."""
    modules = modules or {"slotfns": HANDLERS}
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(source)
    # A queued call may wait a second here, not 2 ms: how deep a slot's queue may be then never
    # depends on how fast this machine runs nap(0), so the queueing tests mean the same everywhere.
    pool = SlotPool(FunctionLoader(tmp_path), queue_wait=1.0)

    async def main():
        try:
            return await body(pool)
        finally:
            await pool.close()
    try:
        return asyncio.run(main())
    finally:
        for name in modules:
            sys.modules.pop(name, None)


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


def nap(seconds: float, timeout: float = 5.0) -> Call:
    return Call("slotfns.nap", ('{"s": %s}' % seconds).encode(), CONTEXT, timeout)


def test_calls_of_a_fast_function_queue_in_one_busy_slot_and_each_gets_its_reply(tmp_path):
    async def body(pool):
        await pool.run_ticket(pool.place(nap(0)))  # the pool learns that nap is fast
        tickets = [pool.place(nap(0)) for _ in range(5)]
        queued = pool.queued
        replies = await asyncio.gather(*[pool.run_ticket(t) for t in tickets])
        return queued, {t.slot for t in tickets}, replies, pool.queued
    queued, slots, replies, queued_after = run(tmp_path, body)
    assert (queued, len(slots), queued_after) == (4, 1, 0), "four behind the first, in its slot"
    assert all(r.ok for r in replies) and len({r.result for r in replies}) == len(slots)


def test_a_function_never_seen_does_not_queue_behind_a_busy_slot(tmp_path):
    async def body(pool):
        first = pool.place(nap(0.2))
        second = pool.place(nap(0.2))
        queued = pool.queued
        replies = await asyncio.gather(pool.run_ticket(first), pool.run_ticket(second))
        return queued, len({r.result for r in replies})
    assert run(tmp_path, body) == (0, 2), "each ran in a slot of its own"


def test_run_never_queues_a_call_behind_another(tmp_path):
    async def body(pool):
        await pool.run_ticket(pool.place(nap(0)))
        calls = [pool.run("slotfns.nap", b'{"s": 0.2}', CONTEXT, 5.0) for _ in range(2)]
        replies = await asyncio.gather(*calls)
        return len({r.result for r in replies})
    assert run(tmp_path, body) == 2, "each ran in a slot of its own"


def test_a_queued_call_may_not_run_when_queueing_is_its_only_way_in(tmp_path):
    async def body(pool):
        return pool.place(nap(0), may_run=False)
    assert run(tmp_path, body) is None


def test_a_queued_calls_timeout_starts_with_its_turn_not_when_it_was_sent(tmp_path):
    async def body(pool):
        await pool.run_ticket(pool.place(nap(0)))
        ahead, behind = pool.place(nap(0.3)), pool.place(nap(0.3, timeout=0.5))
        assert behind.slot is ahead.slot and pool.queued == 1
        return await asyncio.gather(pool.run_ticket(ahead), pool.run_ticket(behind))
    ahead, behind = run(tmp_path, body)
    assert ahead.ok and behind.ok, behind  # 0.6 s after it was sent, but 0.3 s after its turn


def test_a_queued_call_whose_slot_is_killed_before_its_turn_runs_on_another_slot(tmp_path):
    async def body(pool):
        await pool.run_ticket(pool.place(nap(0)))
        ahead, behind = pool.place(nap(5, timeout=0.3)), pool.place(nap(0))
        assert behind.slot is ahead.slot
        first, second = await asyncio.gather(pool.run_ticket(ahead), pool.run_ticket(behind))
        return first, second, ahead.slot.pid, pool.queued
    first, second, killed_pid, queued = run(tmp_path, body)
    assert (first.ok, first.kind) == (False, "timeout")
    assert second.ok and int(second.result) != killed_pid, "it ran, on a fresh slot"
    assert queued == 0


def anap(seconds: float, timeout: float = 5.0, ref: str = "slotfns.anap") -> Call:
    return Call(ref, ('{"s": %s}' % seconds).encode(), CONTEXT, timeout)


def test_calls_of_an_async_function_run_side_by_side_in_one_slot(tmp_path):
    async def body(pool):
        first = await pool.run_ticket(pool.place(anap(0)))  # the slot says it is async
        tickets = [pool.place(anap(0.3)) for _ in range(5)]
        running_at_once = sum(t.slot is tickets[0].slot for t in tickets)
        replies = await asyncio.gather(*[pool.run_ticket(t) for t in tickets])
        return first, running_at_once, pool.queued, replies
    first, at_once, queued, replies = run(tmp_path, body)
    assert first.ok and first.is_async
    assert (at_once, queued) == (5, 0), "sent to one slot at once, none of them queued"
    assert all(r.ok for r in replies) and {r.result for r in replies} == {first.result}


def test_an_async_call_that_overruns_is_cancelled_in_its_slot_and_the_calls_beside_it_finish(tmp_path):
    async def body(pool):
        first = await pool.run_ticket(pool.place(anap(0)))
        late, beside = pool.place(anap(5, timeout=0.3)), pool.place(anap(0.5))
        assert late.slot is beside.slot
        return first, *await asyncio.gather(pool.run_ticket(late), pool.run_ticket(beside))
    first, late, beside = run(tmp_path, body)
    assert (late.ok, late.kind, late.error_type) == (False, "timeout", "Sandbox.Timedout")
    assert beside.ok and beside.result == first.result, "the same slot answered after the timeout: not killed"


def test_an_async_call_that_blocks_its_slots_loop_is_killed_as_a_timeout(tmp_path):
    async def body(pool):
        blocked = await pool.run("slotfns.ablock", b'{"s": 30}', CONTEXT, 0.3)
        after = await pool.run("slotfns.anap", b'{"s": 0}', CONTEXT, 5.0)
        return blocked, after
    blocked, after = run(tmp_path, body)
    assert (blocked.ok, blocked.kind, blocked.error_type) == (False, "timeout", "Sandbox.Timedout")
    assert after.ok, "a fresh slot serves the next call"


def test_a_sync_handler_may_run_an_event_loop_of_its_own(tmp_path):
    reply = run(tmp_path, lambda pool: pool.run("slotfns.runs_a_loop", b'{"s": 0}', CONTEXT, 5.0))
    assert reply.ok and not reply.is_async, reply


def test_a_sync_handler_returning_a_coroutine_has_it_awaited_and_is_not_taken_for_async(tmp_path):
    reply = run(tmp_path, lambda pool: pool.run("slotfns.wraps_a_coroutine", b'{"s": 0}', CONTEXT, 5.0))
    assert reply.ok and reply.result.isdigit() and not reply.is_async, reply


ENV_HANDLERS = '''
import os

def whose(event, context):
    return {"pid": os.getpid(), "SECRET": os.environ.get("SECRET"), "name": os.environ.get("AWS_LAMBDA_FUNCTION_NAME")}

def loud(event, context):
    print("line one")
    print("line two")
    return 1
'''


def env_call(ref: str, environment: dict | None = None, tail: bool = False) -> Call:
    return Call(ref, b"{}", CONTEXT, 5.0, environment=environment or {}, tail=tail)


def run_env(tmp_path: Path, body):
    return run(tmp_path, body, {"envfns": ENV_HANDLERS, "envfns2": ENV_HANDLERS})


def decoded(reply):
    import json
    assert reply.ok, reply
    return json.loads(reply.result)


def test_a_functions_environment_is_set_for_its_calls_and_lambdas_names_with_it(tmp_path):
    async def body(pool):
        return decoded(await pool.run_call(env_call("envfns.whose", {"SECRET": "s1"})))
    got = run_env(tmp_path, body)
    assert got["SECRET"] == "s1" and got["name"] == "envfns.whose"


def test_a_slot_that_ran_a_function_with_an_environment_runs_no_other_function(tmp_path):
    async def body(pool):
        a = decoded(await pool.run_call(env_call("envfns.whose", {"SECRET": "s1"})))
        b = decoded(await pool.run_call(env_call("envfns2.whose")))  # a function without one
        a2 = decoded(await pool.run_call(env_call("envfns.whose", {"SECRET": "s1"})))
        return a, b, a2
    a, b, a2 = run_env(tmp_path, body)
    assert b["SECRET"] is None and b["pid"] != a["pid"], "never in the slot that held the secret"
    assert a2["pid"] != b["pid"], "nor the other way round"


def test_functions_without_an_environment_share_slots(tmp_path):
    async def body(pool):
        first = decoded(await pool.run_call(env_call("envfns.whose")))
        second = decoded(await pool.run_call(env_call("envfns2.whose")))
        return first, second
    first, second = run_env(tmp_path, body)
    assert first["pid"] == second["pid"]


def test_a_call_that_asks_for_its_tail_gets_what_it_printed(tmp_path):
    async def body(pool):
        return (await pool.run_call(env_call("envfns.loud", tail=True)),
                await pool.run_call(env_call("envfns.loud")))
    tailed, untailed = run_env(tmp_path, body)
    assert tailed.log == b"line one\nline two\n" and untailed.log == b""


def test_a_failed_call_carries_the_handlers_stack_without_busways_frames(tmp_path):
    async def body(pool):
        return await pool.run_call(Call("raising.f", b"{}", CONTEXT, 5.0))
    reply = run(tmp_path, body, {"raising": "def f(event, context):\n    raise KeyError('k')\n"})
    assert reply.kind == "exception" and reply.error_type == "KeyError"
    assert len(reply.stack) == 1 and "raise KeyError('k')" in reply.stack[0] and "raising.py" in reply.stack[0]


def test_a_handler_never_sees_the_workers_secrets_key(tmp_path, monkeypatch):
    monkeypatch.setenv("BUS_SECRETS_KEY", "the-workers-own")
    monkeypatch.setenv("SOME_SETTING", "kept")
    source = "import os\ndef f(event, context):\n    return [os.environ.get('BUS_SECRETS_KEY'), os.environ.get('SOME_SETTING')]\n"

    async def body(pool):
        return decoded(await pool.run_call(Call("peek.f", b"{}", CONTEXT, 5.0)))
    assert run(tmp_path, body, {"peek": source}) == [None, "kept"]


def test_a_modules_top_level_reads_its_functions_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BUS_SECRETS_KEY", "the-workers-own")
    source = ("import os\nTABLE = os.environ.get('TABLE')\nKEY = os.environ.get('BUS_SECRETS_KEY')\n"
              "def f(event, context):\n    return [TABLE, KEY]\n")

    async def body(pool):
        return decoded(await pool.run_call(Call("atimport.f", b"{}", CONTEXT, 5.0, environment={"TABLE": "orders"})))
    assert run(tmp_path, body, {"atimport": source}) == ["orders", None]
