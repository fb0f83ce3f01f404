"""One worker's turns under one API destination's rate limit (Queue.take_rates).

Calls that want a turn at the same moment (the deliveries of one read start in the same loop
turn) share one Redis call: it takes as many consecutive turns as there are calls, and hands
them out in order. A call gets the monotonic time its turn is due at, or a Refused with the
wait the limit names; the turns are spaced as if each call had taken its own.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from bus.store.queue import RateTurns

Take = Callable[[int], Awaitable[RateTurns]]  # count -> turns, from the one schedule in Redis


class Refused(NamedTuple):
    """No turn within the longest wait: ask again in `wait` s."""

    wait: float


class Turns:
    """A destination's turns in this worker: `await turns.next()` is a due time or a Refused;
    an error of the Redis call (Redis unreachable, say) is raised in every call that shared it."""

    def __init__(self, take: Take, max_wait: float):
        self._take = take
        self.max_wait = max_wait  # the take's: a refused call asks again once its turn is this near
        self._waiting: deque[asyncio.Future] = deque()
        self._taking = False

    async def next(self) -> float | Refused:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append(future)
        if not self._taking:
            self._taking = True
            loop.call_soon(self._start)  # after this loop turn's other calls have joined
        return await future

    def _start(self) -> None:
        task = asyncio.ensure_future(self._run())
        _TASKS.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(_TASKS.discard)

    async def _run(self) -> None:
        try:
            while self._waiting:  # calls that came while a take was out go in the next one
                batch = list(self._waiting)
                self._waiting.clear()
                await self._take_for(batch)
        finally:
            self._taking = False

    async def _take_for(self, batch: list[asyncio.Future]) -> None:
        try:
            turns = await self._take(len(batch))
        except asyncio.CancelledError:  # the worker is stopping: so are the calls that waited on this
            for future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        due = time.monotonic() + turns.wait
        # A call cancelled while it waited spends its turn: it is taken, and handing it to a
        # later call would need that call's own spacing to be checked again.
        for i, future in enumerate(batch):
            if future.done():
                continue
            future.set_result(due + i * turns.interval if i < turns.count else
                              Refused(self.refused_wait(turns)))

    def refused_wait(self, turns: RateTurns) -> float:
        """How long a call the take had no turn for waits: until the turn after the ones given
        is within the longest wait (count 0: the wait Redis named)."""
        if turns.count == 0:
            return turns.wait
        return max(turns.interval, turns.wait + turns.count * turns.interval - self.max_wait)


_TASKS: set[asyncio.Task] = set()
