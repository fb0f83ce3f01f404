"""The function invoker: runs a FunctionTarget's Python handler the way Lambda does.

Every handler, sync or async, runs in a killable slot process (bus.worker.slots), so a
timeout, a blocked event loop or a crash kills the slot, never the worker, its lease renewals
or its other deliveries. The worker process runs no user code: it does not even import the
handler's module (a slot loads it, and says in its reply whether the handler is async; see
bus.worker.slot for why async handlers run there too). A fast sync function's calls may queue
behind a running call in the same slot; an async function's calls may run side by side in
one slot's event loop.

Functions with reserved concurrency take a lease (bus.store.queue) before each call, so their
calls are placed in a slot only once they hold it (never queued ahead of it); when none is
free the result is THROTTLED and the handler does not run.

A synchronous Invoke (a delivery with a `reply`) is claimed first (Queue.claim_invocation): the
broker claims it itself when no worker has by its start deadline, and answers the caller
TooManyRequestsException; then the handler must not run (NOT_CLAIMED). A claim held by another
worker means that worker stopped mid-call: the entry was reclaimed, and it is not run twice
(CLAIMED_ELSEWHERE: the caller is told the call's process exited).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from bus.config.model import FunctionSettings
from bus.store.connect import unreachable, until_answered
from bus.store.keys import BROKER_CLAIM
from bus.store.queue import Queue
from bus.worker.functions import FunctionLoader
from bus.worker.invoke_reply import NOT_CLAIMED
from bus.worker.invoker import Invocation, Result, throttled
from bus.worker.slot import Call
from bus.worker.slots import SlotPool, Ticket

log = logging.getLogger("bus.worker")

_LEASE_FIRST = object()  # placement of a call that takes its concurrency lease, then a slot
LEASE_HOURS_MS = 3600 * 1000  # a concurrency lease outlives any handler (timeout <= 900 s)
CLAIM_TTL_MS = 3600 * 1000  # a synchronous Invoke's claim outlives its caller's wait
CLAIMED_ELSEWHERE = "claimed_elsewhere"  # Result.kind: another worker started it and stopped


class FunctionInvoker:
    def __init__(self, queue: Queue, loader: FunctionLoader, consumer: str, lease_seconds: float):
        self.queue = queue
        self.slots = SlotPool(loader)
        self.consumer = consumer
        self.lease_seconds = lease_seconds
        self._releasing: set[asyncio.Task] = set()  # leases to free once Redis answers again

    @property
    def queued(self) -> int:
        """Calls placed in a slot whose turn has not begun: they do not count as running."""
        return self.slots.queued

    def place(self, call: Invocation, may_run: bool) -> Ticket | object | None:
        settings = _settings(call)
        if settings.reserved_concurrency is not None or call.delivery.reply:
            return _LEASE_FIRST if may_run else None
        # Placed now, so the next calls can queue behind it (or run beside it) in the same slot.
        return self.slots.place(self._slot_call(call, settings), may_run, call.begin)

    async def invoke(self, call: Invocation, placed: Any) -> Result:
        settings = _settings(call)
        limit, fn = settings.reserved_concurrency, call.record.target.function
        if call.delivery.reply and (refused := await self._claim(call)) is not None:
            return refused
        if limit is None:
            return await self._call(call, settings, placed)
        try:
            acquired = await self._acquire(fn, limit, call.token)
        except Exception as exc:
            if not unreachable(exc):
                raise
            # No lease can be had while Redis is away: wait like a throttled delivery (no attempt
            # used); its outcome is written once Redis answers.
            return throttled("Redis is unreachable: no concurrency lease")
        if not acquired:
            return throttled("reserved_concurrency is 0" if limit == 0 else "over reserved concurrency")
        try:
            return await self._call(call, settings, placed)
        finally:
            await self._release(fn, call.token)

    async def close(self) -> None:
        await self.slots.close()

    async def _claim(self, call: Invocation) -> Result | None:
        """Claim a synchronous Invoke; None if this attempt may run it, else why not."""
        holder = await self.queue.claim_invocation(call.delivery.id, call.token, CLAIM_TTL_MS)
        if holder == call.token:
            return None
        if holder == BROKER_CLAIM:
            return Result(False, NOT_CLAIMED, "NotClaimed", "the broker answered the caller before a worker was free")
        return Result(False, CLAIMED_ELSEWHERE, "Runtime.ExitError",
                      "the worker running this call stopped before it returned")

    async def _release(self, function: str, token: str) -> None:
        """Free a lease; while Redis is away, later, so the handler's outcome is not lost with it."""
        try:
            await self.queue.release(function, token)
        except Exception as exc:
            if not unreachable(exc):
                raise
            task = asyncio.ensure_future(self._release_when_back(function, token))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    async def _release_when_back(self, function: str, token: str) -> None:
        try:
            await until_answered(lambda: self.queue.release(function, token))
        except Exception as exc:  # not an outage: the lease's expiry frees it
            log.warning("concurrency lease %s of %s not released: %s", token, function, exc)

    async def _acquire(self, function: str, limit: int, token: str) -> bool:
        if limit <= 0:
            return False
        expiry = int(time.time() * 1000) + int(self.lease_seconds * 1000) + LEASE_HOURS_MS
        # A dead worker's lease is freed by expiry; release happens in `finally`, so no renewal.
        return await self.queue.acquire(function, limit, token, expiry)

    async def _call(self, call: Invocation, settings: FunctionSettings, placed: Any) -> Result:
        if isinstance(placed, Ticket):
            return await self.slots.run_ticket(placed)
        return await self.slots.run_call(self._slot_call(call, settings), call.begin)

    def _slot_call(self, call: Invocation, settings: FunctionSettings) -> Call:
        record, d = call.record, call.delivery
        context = dict(request_id=d.id, function=record.target.function, rule=record.rule, target=record.target.id,
                       bus=record.bus, attempt=call.attempt, memory=settings.memory_limit_in_mb, worker=self.consumer)
        if d.client_context:  # a synchronous Invoke's (Lambda passes none to other calls)
            context["client_context"] = d.client_context
        # The transformed input, if the target has input options (Lambda gets what EventBridge sends).
        return Call(record.target.function, call.json_body(), context, settings.timeout,
                    environment=settings.environment, tail=d.tail)


def _settings(call: Invocation) -> FunctionSettings:
    return call.record.function or FunctionSettings()
