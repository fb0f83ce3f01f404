"""`bus tail`: print events as they arrive and what happened to each, for debugging rules.

Targets of every kind are named with what they are: `default/r/t (function orders.record)`,
`(http crm-orders)`, `(bus audit)`; an event a bus target sent on shows `[bus]`.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, TextIO

from bus.observe.targets import describe
from bus.observe.trace import ACTIVE_TTL_MS
from bus.patterns import compile_pattern
from bus.store.connect import connect
from bus.store.keys import TAIL_ACTIVE, TRACE, TRACE_FIELD
from bus.store.queue import Queue

REREAD_SECONDS = 1.0  # an unknown target key re-reads the registry at most this often


class Filter:
    """Keeps events of one bus and/or matching a pattern, and the outcomes of kept events."""

    def __init__(self, bus: str | None, pattern: str | None):
        self.bus = bus
        self.pattern = compile_pattern(pattern) if pattern else None
        self.seen: set[str] = set()

    def keep(self, record: dict[str, Any]) -> bool:
        if record["kind"] == "outcome":
            return record.get("event_id") in self.seen
        event = record.get("event")
        if self.bus and record.get("bus") != self.bus:
            return False
        if self.pattern and (event is None or not self.pattern.matches(event)):
            return False
        if event:
            self.seen.add(event["id"])
        return True


class TargetNames:
    """Target key -> what it is ("function probe.record", "http crm", "bus audit"), from the
    registry the brokers publish; re-read when a key it does not know shows up."""

    def __init__(self, queue: Queue):
        self.queue = queue
        self.names: dict[str, str] = {}
        self._read = 0.0

    async def know(self, keys: list[str]) -> Mapping[str, str]:
        if any(k not in self.names for k in keys) and time.monotonic() - self._read >= REREAD_SECONDS:
            self._read = time.monotonic()
            try:
                records = (await self.queue.targets()).values()
            except Exception:  # naming targets is a nicety: a tail never stops over it
                return self.names
            self.names = {record.key: describe(record.target) for record in records}
        return self.names


def _named(key: str, names: Mapping[str, str]) -> str:
    return f"{key} ({names[key]})" if key in names else key


def render(record: dict[str, Any], names: Mapping[str, str] | None = None) -> str:
    """One record as text; `names` (target key -> what it is) adds each target's kind."""
    names = names or {}
    at = datetime.fromtimestamp(record["at"], timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    if record["kind"] == "outcome":
        detail = f" ({record['detail']})" if record.get("detail") else ""
        what = f" · {names[record['target']]}" if record["target"] in names else ""
        return f"{at}   └ {record['target']} attempt {record['attempt']}: {record['outcome']}{detail}{what}"
    event = record.get("event")
    if event is None:
        return f"{at} {record['bus']}: rejected: {record.get('error')}"
    rules = ", ".join(record["rules"]) or "no rule matched"
    head = f"{at} {record['bus']}: {event['source']} / {event['detail-type']} id={event['id']}"
    via = "" if record.get("via") == "put_events" else f" [{record.get('via')}]"
    targets = ", ".join(_named(key, names) for key in record["targets"])
    return f"{head}{via}\n{at}   matched: {rules}" + (f" → {targets}" if targets else "")


async def tail(url: str, bus: str | None, pattern: str | None, follow: bool, as_json: bool,
               out: TextIO = sys.stdout, limit: int = 200, stop: asyncio.Event | None = None) -> None:
    redis = connect(url)
    keep = Filter(bus, pattern)
    names = TargetNames(Queue(redis))
    try:
        if not follow:
            entries = list(reversed(await redis.xrevrange(TRACE, count=limit)))
            await _emit(entries, keep, as_json, out, names)
            return
        await redis.set(TAIL_ACTIVE, "1", px=ACTIVE_TTL_MS)
        last = "$"
        while stop is None or not stop.is_set():
            await redis.set(TAIL_ACTIVE, "1", px=ACTIVE_TTL_MS)
            reply = await redis.xread({TRACE: last}, block=1000, count=500)
            for _, entries in reply or []:
                await _emit(entries, keep, as_json, out, names)
                last = entries[-1][0]
    finally:
        await redis.aclose()


async def _emit(entries, keep: Filter, as_json: bool, out: TextIO, names: TargetNames) -> None:
    records = [r for r in (json.loads(fields[TRACE_FIELD]) for _, fields in entries) if keep.keep(r)]
    known: Mapping[str, str] = {}
    if not as_json:
        keys = [k for r in records for k in ([r["target"]] if r["kind"] == "outcome" else r.get("targets") or [])]
        known = await names.know(keys)
    for record in records:
        print(json.dumps(record) if as_json else render(record, known), file=out, flush=True)
