"""What to do with a delivery, before an attempt and after one: pure decisions, no I/O.

(target record, delivery, attempt, result, now) -> Ack | Retry | DeadLetter | Drop | Throttle,
each carrying the destination record (Notify) it sends, if any; a synchronous Invoke's attempt
-> Answer (its caller's reply). The worker turns an outcome
into store follow-ups (bus.store.queue) written atomically with the ack.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from bus.store.deliveries import Delivery, TargetRecord
from bus.store.replies import InvokeReply
from bus.worker.invoke_reply import invoke_reply
from bus.worker.invoker import THROTTLED, Result
from bus.worker.retry import AGE_EXCEEDED, ATTEMPTS_EXHAUSTED, NOT_RETRYABLE, GiveUp, after_failure, too_old

THROTTLE_DELAY = (0.05, 0.5)  # seconds a throttled delivery waits before it is tried again


@dataclass(frozen=True)
class Notify:
    """A Lambda destination record to send to `to_bus` (on_success / on_failure)."""

    to_bus: str
    condition: str  # "Success" | "RetriesExhausted" | "EventAgeExceeded"
    attempts: int
    response: bytes | None = None  # the handler's return value as JSON
    error: dict[str, str] | None = None


@dataclass(frozen=True)
class Ack:
    """Delivered: acknowledge it."""

    attempt: int
    notify: Notify | None = None
    forward: bytes | None = None  # a bus target's event for the inbox (bus.worker.destinations.InboxItem)


@dataclass(frozen=True)
class Retry:
    """Failed with retries left: try again at `due`, `retries` attempts used."""

    due: float
    retries: int
    message: str


@dataclass(frozen=True, kw_only=True)
class _GivenUp:
    code: str
    message: str
    condition: str  # ATTEMPTS_EXHAUSTED | AGE_EXCEEDED | NOT_RETRYABLE
    attempts: int
    notify: Notify | None = None


@dataclass(frozen=True, kw_only=True)
class DeadLetter(_GivenUp):
    """Out of retries (or too old): keep it in the DLQ `dlq`."""

    dlq: str


@dataclass(frozen=True, kw_only=True)
class Drop(_GivenUp):
    """Out of retries with no DLQ configured: counted, logged, and gone."""


@dataclass(frozen=True)
class Throttle:
    """Over reserved concurrency or a rate limit: wait and try again, without using an attempt."""

    due: float
    retries: int


@dataclass(frozen=True)
class Answer:
    """A synchronous Invoke, done: acknowledge it and send `reply` to the waiting broker (None:
    the broker has answered its caller already). Never retried: Lambda's caller decides that."""

    attempt: int
    reply: InvokeReply | None


Outcome = Ack | Retry | DeadLetter | Drop | Throttle | Answer


def after_sync_attempt(record: TargetRecord, d: Delivery, attempt: int, result: Result) -> Answer:
    """What a synchronous Invoke's attempt leads to: its caller's answer, whatever the result."""
    memory = record.function.memory_limit_in_mb if record.function is not None else 128
    return Answer(attempt, invoke_reply(d, result, memory))


def before_attempt(record: TargetRecord, d: Delivery, attempt: int, now: float) -> DeadLetter | Drop | None:
    """The give-up that needs no attempt at all, or None: the delivery may run."""
    policy = record.target.retry_policy
    if attempt > policy.maximum_retry_attempts + 1:  # earlier attempts died with their workers
        return give_up(record, attempt - 1, ATTEMPTS_EXHAUSTED, "KILLED",
                       "the worker holding this delivery died during (or just before) its last attempt")
    if too_old(policy, d.first_enqueued, now):
        return give_up(record, attempt - 1, AGE_EXCEEDED, "EVENT_AGE",
                       "the event is older than maximum_event_age_seconds")
    return None


def after_attempt(record: TargetRecord, d: Delivery, attempt: int, result: Result, now: float,
                  rand: random.Random | None = None) -> Outcome:
    """What attempt number `attempt` (1-based) of `d`, which ended in `result`, leads to."""
    target = record.target
    if result.ok:
        notify = Notify(target.on_success, "Success", attempt, response=result.result) if target.on_success else None
        return Ack(attempt, notify, result.forward)
    if result.kind == THROTTLED:
        if record.function is not None and record.function.reserved_concurrency == 0:
            # Lambda: reserved concurrency 0 sends async events straight to the DLQ.
            return give_up(record, attempt - 1, ATTEMPTS_EXHAUSTED, "THROTTLED", "reserved_concurrency is 0")
        wait = (rand or random).uniform(*THROTTLE_DELAY)  # a rate limit says how long: at least that
        return Throttle(due=now + max(wait, result.retry_after or 0.0), retries=attempt - 1)
    code, message = error_code(result), f"{result.error_type}: {result.message}"
    if not result.retryable:
        return give_up(record, attempt, NOT_RETRYABLE, code, message)
    decision = after_failure(target.retry_policy, attempt, d.first_enqueued, now, rand, result.retry_after)
    if isinstance(decision, GiveUp):
        return give_up(record, attempt, decision.condition, code, message)
    return Retry(decision.due, attempt, message)


def give_up(record: TargetRecord, attempts: int, condition: str, code: str, message: str) -> DeadLetter | Drop:
    target = record.target
    notify = None
    if target.on_failure:
        notify = Notify(target.on_failure, "EventAgeExceeded" if condition == AGE_EXCEEDED else "RetriesExhausted",
                        attempts, error={"errorType": code, "errorMessage": message})
    given_up = dict(code=code, message=message, condition=condition, attempts=attempts, notify=notify)
    dlq = record.dlq_name
    return DeadLetter(dlq=dlq, **given_up) if dlq else Drop(**given_up)


def error_code(result: Result) -> str:
    """The dead letter's error_code for a failed result: TIMEOUT, EXCEPTION, IMPORT_ERROR, ..."""
    return "IMPORT_ERROR" if result.kind == "import" else result.kind.upper()

