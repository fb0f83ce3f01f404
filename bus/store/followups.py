"""Typed follow-ups: what finishing a delivery writes, atomically with its ack (Queue.finish), and
how each one goes to the FINISH script (bus/store/lua/finish.lua)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bus.store.deadletters import DeadLetter, encode_dead_letter
from bus.store.deliveries import Delivery, TargetRecord, encode_delivery
from bus.store.keys import FIELD, INBOX, delayed_key, dlq_key


@dataclass(frozen=True)
class RetryAt:
    """Put the delivery back in its target's retry set, due at `due` (epoch s)."""

    due: float
    delivery: Delivery


@dataclass(frozen=True)
class ToDeadLetters:
    """Append a dead letter to the DLQ `dlq`."""

    dlq: str
    letter: DeadLetter


@dataclass(frozen=True)
class ToInbox:
    """Append a destination record (an InboxItem, JSON) for a broker to route."""

    item: bytes


@dataclass(frozen=True)
class ToReply:
    """Append a synchronous Invoke's outcome (bus.store.replies) to the waiting broker's stream."""

    stream: str
    reply: bytes


FollowUp = RetryAt | ToDeadLetters | ToInbox | ToReply


def script_args(record: TargetRecord, follow_up: FollowUp) -> tuple[str, str, Any, Any]:
    """The FINISH script's (op, key, a, b) for one follow-up: "Z" = ZADD, "X" = XADD, "R" = XADD to a reply stream."""
    if isinstance(follow_up, RetryAt):
        return ("Z", delayed_key(record.key), int(follow_up.due * 1000), encode_delivery(follow_up.delivery))
    if isinstance(follow_up, ToDeadLetters):
        return ("X", dlq_key(follow_up.dlq), FIELD, encode_dead_letter(follow_up.letter))
    if isinstance(follow_up, ToReply):
        return ("R", follow_up.stream, FIELD, follow_up.reply)
    return ("X", INBOX, FIELD, follow_up.item)
