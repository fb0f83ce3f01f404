"""The function invoker: runs a FunctionTarget's Python handler the way Lambda does.

Sync handlers run in killable slot processes (bus.worker.slots), so a timeout or a crash
kills the slot, not the worker; a fast function's calls may queue behind a running call in
the same slot. Async handlers run in the worker's event loop under asyncio.timeout; whatever
they raise, SystemExit and KeyboardInterrupt included, is the attempt's failure. Loading a
handler (bus.worker.functions) runs its module in the worker, to learn whether it is async.
Functions with reserved concurrency take a lease (bus.store.queue) before each call; when
none is free the result is THROTTLED and the handler does not run.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from bus.config.model import FunctionSettings
from bus.store.queue import Queue
from bus.worker.context import make_context
from bus.worker.functions import FunctionLoader, FunctionLoadError, message_of
from bus.worker.invoker import Invocation, Result, throttled
from bus.worker.slot import Call
from bus.worker.slots import SlotPool, Ticket

_NOW = object()  # placement of a call that runs at once in this process (or on a new slot)
LEASE_HOURS_MS = 3600 * 1000  # a concurrency lease outlives any handler (timeout <= 900 s)


class FunctionInvoker:
    def __init__(self, queue: Queue, loader: FunctionLoader, consumer: str, lease_seconds: float):
        self.queue = queue
        self.loader = loader
        self.slots = SlotPool(loader)
        self.consumer = consumer
        self.lease_seconds = lease_seconds

    @property
    def queued(self) -> int:
        """Calls placed in a slot whose turn has not begun: they do not count as running."""
        return self.slots.queued

    def place(self, call: Invocation, may_run: bool) -> Ticket | object | None:
        settings = _settings(call)
        if not self._runs_in_slot(call.record.target.function, settings):
            return _NOW if may_run else None
        fn = call.record.target.function
        if not may_run and not self.slots.can_queue(fn):
            return None
        # Placed now, so the next calls can queue behind it in the same slot.
        return self.slots.place(Call(fn, bytes(call.delivery.event), self._context_fields(call, settings),
                                     settings.timeout), may_run, call.begin)

    async def invoke(self, call: Invocation, placed: Any) -> Result:
        settings = _settings(call)
        limit, fn = settings.reserved_concurrency, call.record.target.function
        if limit is None:
            return await self._call(call, settings, placed)
        if not await self._acquire(fn, limit, call.token):
            return throttled("reserved_concurrency is 0" if limit == 0 else "over reserved concurrency")
        try:
            return await self._call(call, settings, placed)
        finally:
            await self.queue.release(fn, call.token)

    async def close(self) -> None:
        await self.slots.close()

    def _runs_in_slot(self, ref: str, settings: FunctionSettings) -> bool:
        """A sync handler without reserved concurrency (whose lease is taken before the call)."""
        if settings.reserved_concurrency is not None:
            return False
        try:
            return not self.loader.load(ref).is_async
        except FunctionLoadError:
            return False

    async def _acquire(self, function: str, limit: int, token: str) -> bool:
        if limit <= 0:
            return False
        expiry = int(time.time() * 1000) + int(self.lease_seconds * 1000) + LEASE_HOURS_MS
        # A dead worker's lease is freed by expiry; release happens in `finally`, so no renewal.
        return await self.queue.acquire(function, limit, token, expiry)

    async def _call(self, call: Invocation, settings: FunctionSettings, placed: Any) -> Result:
        if isinstance(placed, Ticket):
            return await self.slots.run_ticket(placed)
        ref, timeout, d = call.record.target.function, settings.timeout, call.delivery
        fields = self._context_fields(call, settings)
        try:
            function = self.loader.load(ref)
        except FunctionLoadError as exc:
            call.begin()
            return Result(False, "import", "Runtime.ImportModuleError", str(exc))
        if not function.is_async:
            return await self.slots.run(ref, bytes(d.event), fields, timeout, call.begin)
        context = make_context(timeout=timeout, **fields)
        call.begin()
        try:
            async with asyncio.timeout(timeout):  # no extra task per call, unlike wait_for
                result = await function.handler(msgspec.json.decode(d.event), context)
        except TimeoutError:
            return Result(False, "timeout", "Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds")
        except asyncio.CancelledError as exc:
            if _cancelled_by_worker():  # the worker is stopping or gave up the delivery: not the handler's doing
                raise
            return _failed(exc)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: one failed attempt, not the worker's exit
            return _failed(exc)
        try:
            return Result(True, result=msgspec.json.encode(result))
        except (TypeError, msgspec.EncodeError):
            return Result(True)

    def _context_fields(self, call: Invocation, settings: FunctionSettings) -> dict[str, Any]:
        record, d = call.record, call.delivery
        return dict(request_id=d.id, function=record.target.function, rule=record.rule, target=record.target.id,
                    bus=record.bus, attempt=call.attempt, memory=settings.memory_limit_in_mb, worker=self.consumer)


def _settings(call: Invocation) -> FunctionSettings:
    return call.record.function or FunctionSettings()


def _cancelled_by_worker() -> bool:
    """Whether a CancelledError comes from a cancel() of this task (the worker's) rather than
    from a handler that raised one itself; asyncio.timeout's own cancel became TimeoutError."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _failed(exc: BaseException) -> Result:
    return Result(False, "exception", type(exc).__name__, message_of(exc))
