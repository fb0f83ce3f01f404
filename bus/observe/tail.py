"""`bus tail`: print events as they arrive and what happened to each, for debugging rules."""
from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from bus.observe.trace import ACTIVE_TTL_MS
from bus.patterns import compile_pattern
from bus.store.connect import connect
from bus.store.keys import TAIL_ACTIVE, TRACE, TRACE_FIELD


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


def render(record: dict[str, Any]) -> str:
    at = datetime.fromtimestamp(record["at"], timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    if record["kind"] == "outcome":
        detail = f" ({record['detail']})" if record.get("detail") else ""
        return f"{at}   └ {record['target']} attempt {record['attempt']}: {record['outcome']}{detail}"
    event = record.get("event")
    if event is None:
        return f"{at} {record['bus']}: rejected: {record.get('error')}"
    rules = ", ".join(record["rules"]) or "no rule matched"
    head = f"{at} {record['bus']}: {event['source']} / {event['detail-type']} id={event['id']}"
    via = "" if record.get("via") == "put_events" else f" [{record.get('via')}]"
    return f"{head}{via}\n{at}   matched: {rules}" + (f" → {', '.join(record['targets'])}" if record["targets"] else "")


async def tail(url: str, bus: str | None, pattern: str | None, follow: bool, as_json: bool,
               out: TextIO = sys.stdout, limit: int = 200, stop: asyncio.Event | None = None) -> None:
    redis = connect(url)
    keep = Filter(bus, pattern)
    try:
        if not follow:
            entries = list(reversed(await redis.xrevrange(TRACE, count=limit)))
            _emit(entries, keep, as_json, out)
            return
        await redis.set(TAIL_ACTIVE, "1", px=ACTIVE_TTL_MS)
        last = "$"
        while stop is None or not stop.is_set():
            await redis.set(TAIL_ACTIVE, "1", px=ACTIVE_TTL_MS)
            reply = await redis.xread({TRACE: last}, block=1000, count=500)
            for _, entries in reply or []:
                _emit(entries, keep, as_json, out)
                last = entries[-1][0]
    finally:
        await redis.aclose()


def _emit(entries, keep: Filter, as_json: bool, out: TextIO) -> None:
    for _, fields in entries:
        record = json.loads(fields[TRACE_FIELD])
        if keep.keep(record):
            print(json.dumps(record) if as_json else render(record), file=out, flush=True)
