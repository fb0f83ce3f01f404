"""One worker's turns under one API destination's rate limit (Queue.take_rates).

Calls that want a turn at the same moment (the deliveries of one read start in the same loop
turn) share one Redis call: it takes as many consecutive turns as there are calls and hands
them out in order. While this worker keeps asking, each take also gets a small reserve of
turns ahead, refilled in the background, so most calls find a turn here instead of waiting
for a durable round trip to Redis. A call gets the monotonic time its turn is due at (it
sends then, not before), or a Refused with the wait the limit names.

Why the limit still holds across every worker: all turns come from the one schedule in Redis,
1/rate apart in server time. A call sends no earlier than its turn (a worker sees a turn at
most one round trip later than Redis: never early), and a reserved turn not used within
RESERVE_SECONDS after it is due is dropped. So each request starts within RESERVE_SECONDS
(+ one Redis round trip) after a turn of its own, and any window of W seconds holds at most
rate x (W + RESERVE_SECONDS + RTT) + 1 requests: at most a tenth of a second's turns more
than the rate in any window, and never more than the rate over time. The reserve is small:
at most RESERVE_MAX turns, at most RESERVE_SECONDS of the schedule, and no more than this
worker handed out in the last RESERVE_SECONDS (its own demand, a tenth of a second ahead),
so a worker that stops wastes at most that much of the limit; it is taken within the same
longest wait as any turn (a refusal leaves none).
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from bus.store.queue import RateTurns

RESERVE_SECONDS = 0.1  # a reserved turn is used within this long after it is due; its cap, in schedule
RESERVE_MAX = 32  # turns a worker holds ahead, at most

Take = Callable[[int], Awaitable[RateTurns]]  # count -> turns, from the one schedule in Redis


class Refused(NamedTuple):
    """No turn within the longest wait: ask again in `wait` s."""

    wait: float


def reserve_cap(rate_per_second: int) -> int:
    """The most turns a worker holds ahead: RESERVE_MAX, and no more than RESERVE_SECONDS of the
    schedule (so none below 10/s)."""
    return min(RESERVE_MAX, int(rate_per_second * RESERVE_SECONDS))


class Turns:
    """A destination's turns in this worker: `await turns.next()` is a due time or a Refused;
    an error of the Redis call (Redis unreachable, say) is raised in every call that shared it."""

    def __init__(self, take: Take, max_wait: float, cap: int = 0):
        self._take = take
        self.max_wait = max_wait  # the take's: a refused call asks again once its turn is this near
        self.cap = cap  # reserve_cap(rate); 0: no reserve
        self._held: deque[float] = deque()  # the reserve: due times of turns taken ahead, in order
        self._given: deque[float] = deque()  # when recent turns were handed out: the reserve's size
        self._waiting: deque[asyncio.Future] = deque()
        self._taking = False

    async def next(self) -> float | Refused:
        now = time.monotonic()
        while self._held and self._held[0] < now - RESERVE_SECONDS:
            self._held.popleft()  # too late to send on: spent
        if self._held and not self._waiting:
            due = self._held.popleft()
            self._gave(now)
            if not self._taking and len(self._held) * 2 < self._wanted(now):
                self._start_take()  # refill before it runs out
            return due
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        if not self._taking:
            self._start_take()
        return await future

    def _gave(self, now: float) -> None:
        if self.cap:
            self._given.append(now)
            if len(self._given) > self.cap:
                self._given.popleft()

    def _wanted(self, now: float) -> int:
        """The reserve to hold: as many turns as this worker handed out in the last RESERVE_SECONDS."""
        while self._given and self._given[0] < now - RESERVE_SECONDS:
            self._given.popleft()
        return len(self._given)

    def _start_take(self) -> None:
        self._taking = True
        asyncio.get_running_loop().call_soon(self._begin)  # after this loop turn's other calls have joined

    def _begin(self) -> None:
        task = asyncio.ensure_future(self._run())
        _TASKS.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(_TASKS.discard)

    async def _run(self) -> None:
        try:
            while True:
                batch = list(self._waiting)
                self._waiting.clear()
                reserve = min(self.cap, self._wanted(time.monotonic()) + len(batch))
                extra = max(0, reserve - len(self._held))
                if batch or extra:
                    await self._take_for(batch, extra)
                self._serve_waiting()
                if not self._waiting:  # calls that came while the take was out and found no turn
                    return
        finally:
            self._taking = False

    async def _take_for(self, batch: list[asyncio.Future], extra: int) -> None:
        try:
            turns = await self._take(len(batch) + extra)  # the batch's first: a short take is the reserve's loss
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
        # A call cancelled while it waited spends its turn: taken, and unused.
        for i, future in enumerate(batch):
            if not future.done():
                future.set_result(due + i * turns.interval if i < turns.count else Refused(self.refused_wait(turns)))
            if i < turns.count:
                self._gave(time.monotonic())
        self._held.extend(due + i * turns.interval for i in range(len(batch), turns.count))

    def _serve_waiting(self) -> None:
        """Calls that joined while a take was out get its reserve, in order."""
        while self._waiting and self._held:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(self._held.popleft())
                self._gave(time.monotonic())

    def refused_wait(self, turns: RateTurns) -> float:
        """How long a call the take had no turn for waits: until the turn after the ones given
        is within the longest wait (count 0: the wait Redis named)."""
        if turns.count == 0:
            return turns.wait
        return max(turns.interval, turns.wait + turns.count * turns.interval - self.max_wait)


_TASKS: set[asyncio.Task] = set()
