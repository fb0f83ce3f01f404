"""Deliveries a worker has read ahead of its free slots, and how it gives them back.

Under `appendfsync always` every XREADGROUP waits for an fsync, so a worker that reads only
as many deliveries as it has free slots runs at most `concurrency` handlers per durable round
trip. Holding up to `prefetch` more lets the next handlers start the moment slots free.

A held delivery has been read, so Redis already counts it (times_delivered): if its worker
is SIGKILLed, the redelivery counts that read as an attempt, like any delivery whose worker
died. A worker that stops on SIGTERM, or holds a delivery too long because its slots stay
busy, gives it back instead: XCLAIM with the count it had before the read and an idle time
that makes it reclaimable by any worker at once (bus.store.queue.Queue.give_back).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

HOLD_SECONDS = 1.0  # a delivery held longer than this goes back to the stream for idle workers
PAUSE_SECONDS = 5.0  # after giving some back, read no further ahead for a while


@dataclass
class HeldDelivery:
    stream: str
    entry_id: bytes
    fields: dict
    times_delivered: int
    since: float = field(default_factory=time.monotonic)
    delivery: Any = None  # the decoded Delivery, once a first try to start it decoded it


class Held:
    """FIFO of deliveries read but not started, with the give-back rules above."""

    def __init__(self, limit: int):
        self.limit = limit
        self._queue: deque[HeldDelivery] = deque()
        self._paused_until = 0.0

    def __len__(self) -> int:
        return len(self._queue)

    def room(self) -> int:
        """How many more this worker may read ahead now."""
        if time.monotonic() < self._paused_until:
            return -len(self._queue)
        return self.limit - len(self._queue)

    def add(self, held: HeldDelivery) -> None:
        self._queue.append(held)

    def first(self) -> HeldDelivery | None:
        return self._queue[0] if self._queue else None

    def next(self) -> HeldDelivery | None:
        return self._queue.popleft() if self._queue else None

    def take_stale(self) -> list[HeldDelivery]:
        """Deliveries held longer than HOLD_SECONDS (the oldest are first in line)."""
        cutoff = time.monotonic() - HOLD_SECONDS
        stale = []
        while self._queue and self._queue[0].since < cutoff:
            stale.append(self._queue.popleft())
        if stale:
            self._paused_until = time.monotonic() + PAUSE_SECONDS
        return stale

    def take_all(self) -> list[HeldDelivery]:
        everything, self._queue = list(self._queue), deque()
        return everything

