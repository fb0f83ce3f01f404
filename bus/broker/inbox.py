"""Brokers route events that workers cannot: Lambda destination records and the events bus
targets forward (with the buses they crossed, `hops`), from the inbox stream.

Any broker may take an item (consumer group); it is acknowledged and deleted only after its
deliveries are in Redis, so a broker crash redelivers the item (reclaimed after IDLE_MS).
An item that can never be routed (unreadable, or for a bus that does not exist) becomes a
dead letter in the `inbox` DLQ, in the same script that acks and deletes it, instead of being
retried forever; any other failure (Redis) leaves it pending for a retry.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from bus.store.connect import unreachable
from bus.store.deadletters import INBOX_UNDECODABLE, INBOX_UNKNOWN_BUS, DeadLetter, make_inbox_dead_letter
from bus.store.inbox import Inbox
from bus.store.keys import FIELD, INBOX_DLQ, as_str
from bus.worker.destinations import InboxItem

log = logging.getLogger("bus.inbox")
IDLE_MS = 10_000
_decode = msgspec.json.Decoder(InboxItem).decode

Publish = Callable[[str, dict[str, Any], float, int], Awaitable[Any]]  # (bus, event, received, hops)


async def consume_inbox(inbox: Inbox, publish: Publish, stop: asyncio.Event | None = None,
                        idle_ms: int = IDLE_MS) -> None:
    """`publish(bus, event, received, hops)` routes one event (KeyError: no such bus); runs until
    cancelled or `stop` is set. Items another broker left pending for `idle_ms` are taken over."""
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    await inbox.ensure_group()
    while stop is None or not stop.is_set():
        try:
            for entry_id, fields in await inbox.take(consumer, idle_ms):
                await _route(inbox, publish, entry_id, fields)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a Redis hiccup: the item stays pending and is retried after idle_ms
            if unreachable(exc):  # an outage is one line, not a traceback a second
                log.warning("inbox routing paused: Redis unreachable (%s); will retry", exc)
            else:
                log.exception("inbox routing failed; will retry")
            await asyncio.sleep(1)


async def _route(inbox: Inbox, publish: Publish, entry_id: str, fields: dict) -> None:
    if fields:  # no fields: deleted meanwhile (Redis < 7 still returns it), only the ack is left
        letter = await _publish(publish, entry_id, fields)
        if letter is not None:
            await inbox.dead_letter(entry_id, letter)
            log.error("inbox item %s cannot be routed (%s: %s): kept as a dead letter in DLQ %s",
                      entry_id, letter.error_code, letter.error_message, INBOX_DLQ)
            return
    await inbox.done(entry_id)


async def _publish(publish: Publish, entry_id: str, fields: dict) -> DeadLetter | None:
    """Route one item; or, if it can never be routed, the dead letter to keep instead."""
    payload = fields.get(FIELD)
    enqueued = int(entry_id.split("-")[0]) / 1000
    try:
        if payload is None:
            raise msgspec.DecodeError(f"no {as_str(FIELD)!r} field (fields: {sorted(map(as_str, fields))})")
        item = _decode(payload)
    except msgspec.DecodeError as exc:  # ValidationError included: JSON, but not an InboxItem
        return make_inbox_dead_letter(entry_id, "", _json_object(payload), INBOX_UNDECODABLE,
                                      f"{exc}; item: {payload!r}", enqueued)
    try:
        await publish(item.bus, item.event, time.time(), item.hops)
    except KeyError:  # the router knows no such bus (removed since the record was written)
        return make_inbox_dead_letter(entry_id, item.bus, msgspec.json.encode(item.event), INBOX_UNKNOWN_BUS,
                                      f"Event bus {item.bus} does not exist.", enqueued)
    return None


def _json_object(payload: bytes | None) -> bytes:
    """A dead letter's event is a JSON object: the payload if it is one, else {} (the payload
    is then in the error message)."""
    try:
        return payload if payload is not None and isinstance(msgspec.json.decode(payload), dict) else b"{}"
    except msgspec.DecodeError:
        return b"{}"
