"""The queue invoker: a QueueTarget sends the event (or what its input option makes of it) to a
busway SQS queue as one message (bus.store.sqs), as EventBridge sends to an SQS target: the body
is the event's JSON text, or the input's text as it is.

A queue that does not exist (deleted, or never made) fails the delivery, not retryable, so it
goes to the target's DLQ; Redis being away is raised, so the worker retries the attempt later.
"""
from __future__ import annotations

from typing import Any

from bus.store.connect import unreachable
from bus.store.sqs import NoSuchQueue, SqsStore, new_message
from bus.worker.invoker import Invocation, Result

class QueueInvoker:
    def __init__(self, store: SqsStore):
        self.store = store

    def place(self, call: Invocation, may_run: bool) -> Any | None:
        return True if may_run else None

    async def invoke(self, call: Invocation, placed: Any) -> Result:
        call.begin()
        name = call.record.target.queue
        body = call.body().decode("utf-8", errors="replace")
        try:
            attrs = await self.store.get(name)
            if attrs is None:
                raise NoSuchQueue(name)
            if len(body.encode()) > attrs.maximum_message_size:
                return Result(False, "input", "MessageTooLong", f"the message is over queue {name}'s "
                              f"maximum_message_size ({attrs.maximum_message_size} bytes)", retryable=False)
            await self.store.send(name, [(new_message(body, sender="busway"), attrs.delay_seconds)])
        except NoSuchQueue:
            return Result(False, "exception", "QueueDoesNotExist", f"queue {name} does not exist", retryable=False)
        except Exception as exc:
            if unreachable(exc):
                return Result(False, "exception", "RedisUnreachable", str(exc))
            raise
        return Result(True)

    async def close(self) -> None:
        pass
