"""One EventBridge event: the envelope every event busway makes, with AWS's keys in AWS's order.

PutEvents entries (bus.broker.envelope), scheduled events (bus.scheduler.event) and Lambda
destination records (bus.worker.destinations) all come out of new_event, so their keys, key
order and time format cannot drift apart.
"""
from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from bus.identity import Identity
from bus.ids import new_id


def new_event(who: Identity, source: str, detail_type: str, time: str,
              resources: list[str], detail: Any) -> dict[str, Any]:
    """A new event with a fresh id. `time` is already formatted (format_time): callers differ in
    what time it is (sent, scheduled, finished). Positional on purpose: PutEvents calls it per event."""
    return {
        "version": "0",
        "id": new_id(),
        "detail-type": detail_type,
        "source": source,
        "account": who.account,
        "time": time,
        "region": who.region,
        "resources": resources,
        "detail": detail,
    }


def format_time(epoch: float) -> str:
    """An event's `time`: RFC 3339 in UTC, whole seconds, as EventBridge writes it."""
    return _format_second(int(epoch // 1))


def time_ms(event_time: str) -> int:
    """An event's `time` (RFC 3339, as format_time writes it or a client gave it) in epoch ms:
    the score archives keep events by."""
    return _parse_time(event_time)


@functools.lru_cache(maxsize=64)  # as for _format_second: most events of a second share one
def _parse_time(event_time: str) -> int:
    return int(datetime.fromisoformat(event_time).timestamp() * 1000)


@functools.lru_cache(maxsize=64)  # every event of a request, and most of a busy second, share one
def _format_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
