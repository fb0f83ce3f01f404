"""Timeouts hold for async handlers too: one that blocks its event loop or ends its process
costs its own attempt and nothing else (issue 12).

Async handlers run in slot processes like sync ones, so a blocking one is killed on its
timeout while the worker keeps renewing leases and running other deliveries.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys

from bus.config.model import FunctionSettings, FunctionTarget
from bus.store.deliveries import TargetRecord, new_delivery
from bus.store.keys import stream_key
from bus.worker.functions import FunctionLoader
from bus.worker.invoker import Invocation
from bus.worker.invokers.function import FunctionInvoker
from tests.conftest import wait_for, with_client
from tests.httpc import post

RULES = """
functions:
  blocking.sleep_blocking: {timeout: 2}
rules:
  - name: bad
    event_pattern: {source: [bad]}
    targets:
      - id: t1
        function: %s
        retry_policy: {maximum_retry_attempts: %d, backoff_base_seconds: 0.05, backoff_max_seconds: 0.2}
        dead_letter: true
  - name: fine
    event_pattern: {source: [fine]}
    targets: [{id: t2, function: blocking.stamp}]
"""
LEASE = ("--lease-seconds", "1.5")  # a blocked worker would lose its lease well within the 30 s block


def _letters(stack) -> list[dict]:
    return [json.loads(stack.bus("dlq", "show", line.split()[0]).stdout)
            for line in stack.bus("dlq", "list").stdout.splitlines()]


def _calls(stack, handler: str) -> list[dict]:
    return [c for c in stack.records() if c["handler"] == handler]


def test_an_async_handler_blocking_its_loop_times_out_once_while_the_worker_serves_other_targets(stack):
    stack.write_rules(RULES % ("blocking.sleep_blocking", 0))
    stack.start_broker()
    first = stack.start_worker(extra=LEASE)
    post(stack.url + "/events", {"source": "bad", "detail-type": "T", "detail": {}})
    [blocked] = wait_for(lambda: _calls(stack, "sleep_blocking"), what="the blocking handler's start")
    post(stack.url + "/events", {"source": "fine", "detail-type": "T", "detail": {}})
    [fine] = wait_for(lambda: _calls(stack, "stamp"), what="the other target's call")
    assert fine["context"]["worker"] == blocked["context"]["worker"], "the same worker ran both"
    assert fine["t"] < blocked["t"] + 2, "the other delivery completed while the blocked call was within its timeout"
    second = stack.start_worker(name="rival", extra=LEASE)  # would take the delivery over if its lease lapsed

    [letter] = wait_for(lambda: _letters(stack), what="the timed-out call's dead letter")
    assert (letter["error_code"], letter["retry_attempts"]) == ("TIMEOUT", 0), letter
    assert "timed out after 2.00 seconds" in letter["error_message"]
    assert _stream_is_empty(stack), "the delivery is finished: nothing left to run again"
    assert len(_calls(stack, "sleep_blocking")) == 1, "it ran exactly once"
    assert first.poll() is None and second.poll() is None


def test_an_async_handler_calling_os_exit_costs_one_attempt_and_the_worker_lives(stack):
    stack.write_rules(RULES % ("blocking.hard_exit", 1))
    stack.start_broker()
    worker = stack.start_worker()
    post(stack.url + "/events", {"source": "bad", "detail-type": "T", "detail": {}})
    [letter] = wait_for(lambda: _letters(stack), what="a dead letter after two attempts")
    assert (letter["error_code"], letter["retry_attempts"]) == ("KILLED", 1), letter
    assert "exited (code 3)" in letter["error_message"]
    assert len(_calls(stack, "hard_exit")) == 2, "one call per attempt"
    assert worker.poll() is None, "the worker is still running"
    post(stack.url + "/events", {"source": "fine", "detail-type": "T", "detail": {}})
    wait_for(lambda: _calls(stack, "stamp"), what="the next delivery handled by the same worker")


def _stream_is_empty(stack) -> bool:
    async def length(client):
        return await client.xlen(stream_key("default/bad/t1"))
    return with_client(stack.redis_url, length) == 0


def test_the_worker_runs_an_async_handler_without_importing_its_module(tmp_path):
    (tmp_path / "only_in_slots.py").write_text("import asyncio, os\n\nasync def h(event, context):\n"
                                               "    await asyncio.sleep(0)\n    return os.getpid()\n")
    record = TargetRecord(bus="default", rule="r", target=FunctionTarget(id="t", function="only_in_slots.h"),
                          function=FunctionSettings(timeout=5.0))
    call = Invocation(record, new_delivery(b'{"id": "ev", "detail": {}}', record, 0.0), 1, "token", lambda: None)
    invoker = FunctionInvoker(None, FunctionLoader(tmp_path), "w", 30.0)  # type: ignore[arg-type]: no leases

    async def main():
        try:
            return await invoker.invoke(call, invoker.place(call, True))
        finally:
            await invoker.close()
    path = list(sys.path)
    try:
        result = asyncio.run(main())
    finally:
        sys.path[:] = path
    assert result.ok and result.is_async and int(result.result) != os.getpid(), result
    assert "only_in_slots" not in sys.modules
