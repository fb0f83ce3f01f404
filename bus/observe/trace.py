"""The live trace behind `bus tail`: what happened to each event, only while someone watches.

A tail client keeps `busway:tail:active` alive (a key with a short expiry). While it exists,
brokers add one record per event (matched rules, deliveries) and workers one per outcome to
the capped stream `busway:trace`. When nobody tails, the cost is one EXISTS per second.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
import redis.asyncio as aioredis

from bus.store.keys import TAIL_ACTIVE, TRACE, TRACE_FIELD

TRACE_MAXLEN = 10_000
ACTIVE_TTL_MS = 6_000

log = logging.getLogger("bus.trace")
_encode = msgspec.json.Encoder().encode


class Tracer:
    def __init__(self, redis: aioredis.Redis):
        self.redis = redis
        self.enabled = False
        self._tasks: set[asyncio.Task] = set()

    async def watch(self, interval: float = 1.0) -> None:
        while True:
            try:
                self.enabled = bool(await self.redis.exists(TAIL_ACTIVE))
            except Exception:  # tracing is best effort; never disturb delivery
                self.enabled = False
            await asyncio.sleep(interval)

    def event(self, bus: str, event: dict[str, Any] | None, *, rules: list[str] = (), targets: list[str] = (),
              error: str | None = None, source: str = "put_events") -> None:
        if self.enabled:
            self._add({"kind": "event", "bus": bus, "event": event, "rules": list(rules),
                       "targets": list(targets), "error": error, "via": source})

    def outcome(self, event_id: str | None, target: str, attempt: int, outcome: str, detail: str = "") -> None:
        if self.enabled:
            self._add({"kind": "outcome", "event_id": event_id, "target": target, "attempt": attempt,
                       "outcome": outcome, "detail": detail})

    def _add(self, record: dict[str, Any]) -> None:
        record["at"] = time.time()
        task = asyncio.ensure_future(self._write(_encode(record)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, payload: bytes) -> None:
        try:
            await self.redis.xadd(TRACE, {TRACE_FIELD: payload}, maxlen=TRACE_MAXLEN, approximate=True)
        except Exception:
            log.debug("trace write failed", exc_info=True)
