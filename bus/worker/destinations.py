"""Events a worker sends to a bus: Lambda destination records (on_success / on_failure) and
the events bus targets forward (bus.worker.invokers.bus).

A worker cannot route events itself (rules live with the brokers), so it writes the item
to the inbox stream in the same atomic step that finishes the delivery; a broker routes it.
"""
from __future__ import annotations

import time
from typing import Any

import msgspec

from bus.events import format_time, new_event
from bus.identity import Identity
from bus.store.deliveries import Delivery

SUCCESS = "Lambda Function Invocation Result - Success"
FAILURE = "Lambda Function Invocation Result - Failure"


class InboxItem(msgspec.Struct):
    bus: str
    event: dict[str, Any]
    hops: int = 0  # buses the event crossed to get here (a bus target's item: the loop guard)


class _RawInboxItem(msgspec.Struct):
    """InboxItem with the event as stored JSON: forwarding it needs no decoding."""

    bus: str
    event: msgspec.Raw
    hops: int = 0


def forward_item(bus: str, event: msgspec.Raw | bytes, hops: int) -> bytes:
    """The inbox item of an event a bus target forwards to `bus`, `hops` buses crossed."""
    raw = event if isinstance(event, msgspec.Raw) else msgspec.Raw(event)
    return msgspec.json.encode(_RawInboxItem(bus, raw, hops))


def invocation_record(d: Delivery, *, function_arn: str, account: str, region: str, condition: str,
                      attempts: int, response: Any, error: dict[str, str] | None, to_bus: str) -> bytes:
    detail = {
        "version": "1.0",
        "timestamp": format_time(time.time()),
        "requestContext": {"requestId": d.id, "functionArn": function_arn, "condition": condition,
                           "approximateInvokeCount": attempts},
        "requestPayload": msgspec.json.decode(d.event),
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                            **({"functionError": "Unhandled"} if error else {})},
        "responsePayload": error if error else response,
    }
    event = new_event(Identity(account=account, region=region), "lambda", FAILURE if error else SUCCESS,
                      format_time(time.time()), [function_arn], detail)
    return msgspec.json.encode(InboxItem(to_bus, event))
