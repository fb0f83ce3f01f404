"""SQS-compatible queues in Redis: what the broker's SQS API (bus.broker.awssqs), the `queue:`
target kind and the event source mappings' pollers (bus.worker.esm) do to a queue.

A queue is its attributes (one field of SQS_QUEUES) and six keys (bus.store.keys.sqs_keys): a
message is visible when its `ready` score (ms) has passed; receiving it moves the score past the
visibility timeout and gives it a new receipt token, which deleting or changing its visibility
must name (an older receipt changes nothing, as on SQS). Sending, receiving (with retention and
the redrive to the dead-letter queue) and settling are one script call each.
"""
from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import msgspec
import redis.asyncio as aioredis

from bus.config.model import QueueDecl
from bus.ids import new_id
from bus.store.keys import SQS_QUEUES, as_str, sqs_keys
from bus.store.scripts import SQS_RECEIVE, SQS_SEND, SQS_SETTLE, run_script


class QueueAttributes(msgspec.Struct, frozen=True, kw_only=True):
    """A queue's settings, SQS's defaults. `dead_letter_queue` and `max_receive_count` are its
    RedrivePolicy (by queue name)."""

    visibility_timeout: int = 30
    message_retention_period: int = 345600  # 4 days
    delay_seconds: int = 0
    receive_message_wait_time_seconds: int = 0
    maximum_message_size: int = 1048576
    dead_letter_queue: str = ""
    max_receive_count: int = 0
    redrive_allow_policy: str = ""
    created: float = 0.0
    modified: float = 0.0
    declared: bool = False  # from a rules file's `queues:`: the API may not delete or change it


def queue_attributes(decl: QueueDecl) -> QueueAttributes:
    """A rules file's queue as stored attributes (declared: read-only through the API)."""
    redrive = decl.redrive_policy
    return QueueAttributes(
        visibility_timeout=decl.visibility_timeout, message_retention_period=decl.message_retention_period,
        delay_seconds=decl.delay_seconds, receive_message_wait_time_seconds=decl.receive_message_wait_time_seconds,
        maximum_message_size=decl.maximum_message_size,
        dead_letter_queue=redrive.dead_letter_queue if redrive else "", max_receive_count=redrive.max_receive_count if redrive else 0,
        declared=True)


class Message(msgspec.Struct, frozen=True):
    id: str
    body: str
    md5: str
    sent: int  # ms
    attributes: dict[str, Any] = {}  # MessageAttributes as SQS takes them ({DataType, StringValue|BinaryValue})
    attributes_md5: str = ""
    sender: str = ""
    trace_header: str = ""


class Received(msgspec.Struct, frozen=True):
    message: Message
    receive_count: int
    first_received: int  # ms
    receipt: str  # the receipt handle: "<message id>.<token>"


class NoSuchQueue(Exception):
    pass


_encode = msgspec.json.Encoder().encode
_decode_attrs = msgspec.json.Decoder(QueueAttributes).decode
_decode_message = msgspec.json.Decoder(Message).decode


def body_md5(body: str) -> str:
    return hashlib.md5(body.encode("utf-8")).hexdigest()


def new_message(body: str, attributes: dict[str, Any] | None = None, attributes_md5: str = "",
                sender: str = "", trace_header: str = "") -> Message:
    return Message(new_id(), body, body_md5(body), int(time.time() * 1000), attributes or {}, attributes_md5,
                   sender, trace_header)


def receipt_of(message_id: str, token: str) -> str:
    return f"{message_id}.{token}"


def parse_receipt(receipt: str) -> tuple[str, str] | None:
    """(message id, token) of a receipt handle this store made, else None."""
    message_id, dot, token = receipt.rpartition(".")
    if not dot or len(token) != 16 or len(message_id) != 36:
        return None
    return message_id, token


class SqsStore:
    def __init__(self, redis: aioredis.Redis):
        self.redis = redis

    # --- queues ---------------------------------------------------------------------------------

    async def get(self, name: str) -> QueueAttributes | None:
        raw = await self.redis.hget(SQS_QUEUES, name)
        return _decode_attrs(raw) if raw is not None else None

    async def all(self) -> dict[str, QueueAttributes]:
        return {as_str(k): _decode_attrs(v) for k, v in (await self.redis.hgetall(SQS_QUEUES)).items()}

    async def create(self, name: str, attrs: QueueAttributes) -> QueueAttributes | None:
        """Create the queue; None if made now, else the attributes it already has (unchanged)."""
        now = time.time()
        made = await self.redis.hsetnx(SQS_QUEUES, name, _encode(msgspec.structs.replace(attrs, created=now, modified=now)))
        return None if made else await self.get(name)

    async def put(self, name: str, attrs: QueueAttributes) -> None:
        """Create or replace the attributes (SetQueueAttributes, a rules file's `queues:`), keeping its messages."""
        old = await self.get(name)
        now = time.time()
        attrs = msgspec.structs.replace(attrs, created=old.created if old else now, modified=now)
        await self.redis.hset(SQS_QUEUES, name, _encode(attrs))

    async def delete(self, name: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(SQS_QUEUES, name)
            pipe.delete(*sqs_keys(name))
            await pipe.execute()

    async def purge(self, name: str) -> None:
        await self.redis.delete(*sqs_keys(name))

    async def counts(self, name: str) -> tuple[int, int, int]:
        """(visible, in flight, delayed)."""
        ready, delayed = sqs_keys(name)[:2]
        now = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcount(ready, "-inf", now)
            pipe.zcount(ready, f"({now}", "+inf")
            pipe.zcard(delayed)
            visible, in_flight, waiting = await pipe.execute()
        return visible, in_flight, waiting

    # --- messages -------------------------------------------------------------------------------

    async def send(self, name: str, messages: list[tuple[Message, int]]) -> None:
        """Send (message, delay seconds) pairs; NoSuchQueue if the queue does not exist."""
        keys = [SQS_QUEUES, *sqs_keys(name)[:3]]
        ready, delayed, stored = keys[1], keys[2], keys[3]
        args: list[Any] = [name, int(time.time() * 1000)]
        for message, delay in messages:
            args += [message.id, _encode(message), int(delay * 1000)]
        if not await run_script(self.redis, SQS_SEND, [SQS_QUEUES, ready, delayed, stored], args):
            raise NoSuchQueue(name)

    async def receive(self, name: str, attrs: QueueAttributes, count: int, visibility: int | None) -> list[Received]:
        """Up to `count` visible messages, invisible for `visibility` seconds (None: the queue's)."""
        dlq = attrs.dead_letter_queue if attrs.max_receive_count else ""
        tokens = [os.urandom(8).hex() for _ in range(count)]
        vt = attrs.visibility_timeout if visibility is None else visibility
        args = [name, int(time.time() * 1000), count, vt * 1000, attrs.message_retention_period * 1000,
                attrs.max_receive_count if dlq else 0, dlq, *tokens]
        found = await run_script(self.redis, SQS_RECEIVE, [SQS_QUEUES, *sqs_keys(name), *sqs_keys(dlq or name)], args)
        if found is None:
            raise NoSuchQueue(name)
        out = []
        for i in range(0, len(found), 5):
            _, raw, count_, first, token = found[i:i + 5]
            message = _decode_message(raw)
            out.append(Received(message, int(count_), int(first), receipt_of(message.id, as_str(token))))
        return out

    async def delete_messages(self, name: str, receipts: list[tuple[str, str]]) -> list[int]:
        """Per (id, token): 1 deleted, 0 a stale receipt (kept), -1 gone already."""
        return await self._settle(name, -1, receipts)

    async def change_visibility(self, name: str, receipts: list[tuple[str, str]], seconds: int) -> list[int]:
        """Per (id, token): 1 changed, 0 a stale receipt, -1 gone, -2 not in flight."""
        return await self._settle(name, seconds * 1000, receipts)

    async def _settle(self, name: str, vt_ms: int, receipts: list[tuple[str, str]]) -> list[int]:
        keys = sqs_keys(name)
        ready, _, stored, counts, tokens, first = keys
        args: list[Any] = [int(time.time() * 1000), vt_ms]
        for message_id, token in receipts:
            args += [message_id, token]
        return [int(r) for r in await run_script(self.redis, SQS_SETTLE, [ready, stored, counts, tokens, first], args)]
