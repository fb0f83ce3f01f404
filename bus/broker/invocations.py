"""Invoke on the broker: hand a call to the workers, and for a synchronous one wait for its answer.

Event: the payload is queued on the function's event-invoke target (bus.store.deliveries'
invoke records) like a rule's delivery, with the function's async retry settings: 202 once it is
in Redis. RequestResponse: the call is queued on the function's sync target with this broker's
reply stream in it; a worker claims it (bus.store.queue.claim_invocation), runs it once, and
writes the answer to the reply stream with the call's ack. One task per broker reads that stream
for every waiting call (Replies). If no worker has claimed the call START_WAIT seconds after it
was queued (every worker busy, or none running), the broker claims it itself and the caller gets
TooManyRequestsException, as Lambda throttles; the claim makes sure a call is either run or
refused, never both. A call claimed by a worker that then never answers (it was killed) ends in
Lambda's Runtime.ExitError after the function's timeout and GRACE.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time

import msgspec

from bus.config.model import FunctionSettings
from bus.ids import new_id
from bus.store.connect import unreachable
from bus.store.deliveries import EVENT_INVOKE, INVOKE_BUS, SYNC_INVOKE, Delivery
from bus.store.keys import BROKER_CLAIM, reply_key
from bus.store.queue import Queue
from bus.store.replies import FUNCTION_ERROR, THROTTLED, InvokeReply, decode_reply

log = logging.getLogger("bus.broker")

START_WAIT = float(os.environ.get("BUS_INVOKE_START_WAIT", "1.0"))  # s a sync call may wait for a worker
GRACE = 2.0  # s past the function's timeout before a claimed call with no answer is given up
CLAIM_TTL_MS = 3600 * 1000
READ_BLOCK_MS = 1000
CONCURRENCY_LIMIT = "ConcurrentInvocationLimitExceeded"


def _delivery(ref: str, payload: bytes, rule: str, reply: str = "", tail: bool = False,
              client_context: str = "") -> Delivery:
    now = time.time()
    return Delivery(id=new_id(), event=msgspec.Raw(payload), bus=INVOKE_BUS, rule=rule, target=ref, function=ref,
                    first_enqueued=now, ingested=now, reply=reply, tail=tail, client_context=client_context)


async def invoke_event(queue: Queue, ref: str, payload: bytes) -> str:
    """Queue an InvocationType Event call; its request id once it is in Redis."""
    d = _delivery(ref, payload, EVENT_INVOKE)
    await queue.enqueue([d])
    return d.id


async def invoke_sync(queue: Queue, replies: "Replies", ref: str, settings: FunctionSettings, payload: bytes,
                      tail: bool = False, start_wait: float | None = None, client_context: str = "") -> InvokeReply:
    """Run a RequestResponse call on a worker and return its answer (or the throttle)."""
    d = _delivery(ref, payload, SYNC_INVOKE, replies.stream, tail, client_context)
    answer = replies.expect(d.id)
    try:
        await queue.enqueue([d])
        done, _ = await asyncio.wait([answer], timeout=START_WAIT if start_wait is None else start_wait)
        if done:
            return answer.result()
        holder = await queue.claim_invocation(d.id, BROKER_CLAIM, CLAIM_TTL_MS)
        if holder == BROKER_CLAIM:  # no worker took it in time: it will never run
            return InvokeReply(d.id, THROTTLED, reason=CONCURRENCY_LIMIT)
        done, _ = await asyncio.wait([answer], timeout=settings.timeout + GRACE)
        if done:
            return answer.result()
        return InvokeReply(d.id, FUNCTION_ERROR, msgspec.json.encode({
            "errorType": "Runtime.ExitError",
            "errorMessage": f"RequestId: {d.id} Error: the worker running the call stopped before it returned"}))
    finally:
        replies.forget(d.id)


class Replies:
    """This broker's reply stream and the calls waiting on it, read by one task."""

    def __init__(self, queue: Queue):
        self.queue = queue
        self.stream = reply_key(new_id())
        self._waiting: dict[str, asyncio.Future] = {}
        self._task: asyncio.Task | None = None
        # The read blocks its connection: one of its own on one Redis (the cluster client takes a
        # node connection per command).
        self._reader = queue.redis if queue.cluster else queue.redis.client()

    def expect(self, request_id: str) -> asyncio.Future:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._read())
        future = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._reader is not self.queue.redis:
            await self._reader.aclose()

    async def _read(self) -> None:
        after = b"0-0"
        pause = 0.05
        while True:
            try:
                entries = await self.queue.read_replies(self._reader, self.stream, after, READ_BLOCK_MS)
                if entries:
                    after = entries[-1][0]
                    self._resolve([raw for _, raw in entries])
                    await self.queue.drop_replies(self.stream, [entry_id for entry_id, _ in entries])
                pause = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the waiting calls end at their own deadlines
                if not unreachable(exc):
                    log.warning("reading Invoke replies failed", exc_info=True)
                await asyncio.sleep(pause)
                pause = min(1.0, pause * 2)

    def _resolve(self, raws: list[bytes]) -> None:
        for raw in raws:
            try:
                reply = decode_reply(raw)
            except msgspec.DecodeError:
                log.warning("an unreadable Invoke reply on %s was dropped", self.stream)
                continue
            future = self._waiting.pop(reply.request_id, None)
            if future is not None and not future.done():
                future.set_result(reply)
