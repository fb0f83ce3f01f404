"""Group commit: requests that arrive while an enqueue call is in flight share the next one.

One ENQUEUE call through redis-py costs a broker far more CPU than the Redis work it asks for
(docs/benchmarks.md, issue 16): under load most of a request's time was that one call. So a
request that finds the store idle is written at once, alone (no added latency), and requests
that arrive while the calls allowed in flight are busy wait for one to end and then go together
in one call. Each request is answered only when the call carrying it succeeded, and a failed call
fails every request it carried: the durability contract (an EventId only once its deliveries are
in Redis) is unchanged.

A batch is capped in bytes, so a large request never waits behind a batch that is larger still;
a request over the cap goes alone.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

MAX_BATCH_BYTES = 1 << 20  # payload bytes per combined call


@dataclass(slots=True)
class Part:
    """One request's share of an ENQUEUE call: its streams and payloads, its archive blocks
    (keys in pairs, args as ENQUEUE reads them) and its payload size."""
    streams: list[str]
    payloads: list[Any]
    archive_keys: list[str] = field(default_factory=list)
    archive_args: list[Any] = field(default_factory=list)
    size: int = 0


def combine(parts: list[Part]) -> Part:
    """The parts as one: deliveries first, in order, then every archive block (ENQUEUE takes an
    archive's keys more than once, each block with its own count)."""
    if len(parts) == 1:
        return parts[0]
    out = Part([], [])
    for part in parts:
        out.streams += part.streams
        out.payloads += part.payloads
        out.archive_keys += part.archive_keys
        out.archive_args += part.archive_args
        out.size += part.size
    return out


def take_batch(waiting: list[Part], max_bytes: int = MAX_BATCH_BYTES) -> int:
    """How many of the waiting parts, from the first, go in the next call: at least one, then as
    many as fit under `max_bytes`."""
    size, n = waiting[0].size, 1
    while n < len(waiting) and size + waiting[n].size <= max_bytes:
        size += waiting[n].size
        n += 1
    return n


class GroupCommit:
    """Writes parts through `send` (one combined part per call), up to `max_in_flight` calls at a
    time; a part that finds them all busy waits for the next call to start, with the others."""

    def __init__(self, send: Callable[[Part], Awaitable[None]], max_bytes: int = MAX_BATCH_BYTES,
                 max_in_flight: int = 1):
        self._send = send
        self._max_bytes = max_bytes
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._waiting: list[tuple[Part, asyncio.Future]] = []  # each part and the future its writer awaits
        self._tasks: set[asyncio.Task] = set()  # a batch's call runs in its own task: keep it referenced
        self.calls = 0  # calls made, and parts they carried: how much grouping happened
        self.parts = 0

    async def write(self, part: Part) -> None:
        """Return once `part` is written; raise what its call raised."""
        if self._in_flight >= self._max_in_flight:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieved)  # its caller may have left: no "never retrieved" noise
            self._waiting.append((part, future))
            # shield: a caller that stops waiting (its client left) must not cancel the call that
            # carries the others; its own deliveries are written anyway (at least once).
            await asyncio.shield(future)
            return
        self._in_flight += 1
        try:
            await self._call([part])
        finally:
            self._next()

    async def _call(self, parts: list[Part]) -> None:
        self.calls += 1
        self.parts += len(parts)
        await self._send(combine(parts))

    def _next(self) -> None:
        """Start the call for the parts that waited, or free the call's place."""
        if not self._waiting:
            self._in_flight -= 1
            return
        n = take_batch([part for part, _ in self._waiting], self._max_bytes)
        batch, self._waiting = self._waiting[:n], self._waiting[n:]
        task = asyncio.get_running_loop().create_task(self._flush([p for p, _ in batch], [f for _, f in batch]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, parts: list[Part], futures: list[asyncio.Future]) -> None:
        try:
            await self._call(parts)
        except asyncio.CancelledError:  # the loop is closing: the waiters are cancelled with it
            for future in futures:
                future.cancel()
            raise
        except BaseException as exc:  # every waiter gets the call's error, whatever it is
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for future in futures:
                if not future.done():
                    future.set_result(None)
        finally:
            self._next()


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
