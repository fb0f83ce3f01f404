"""What happens after a failed attempt: retry when, or give up why. Pure functions, no I/O.

Exponential backoff with full jitter (AWS Architecture Blog's "full jitter"): the n-th retry
waits uniform(0, min(max, base * 2**(n-1))) seconds.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from bus.config.model import RetryPolicy

ATTEMPTS_EXHAUSTED = "MaximumRetryAttemptsExhausted"
AGE_EXCEEDED = "MaximumEventAgeExceeded"
NOT_RETRYABLE = "NonRetryableError"  # the target's answer says a retry cannot help (HTTP 400, a bus loop)


@dataclass(frozen=True)
class Retry:
    due: float  # epoch seconds


@dataclass(frozen=True)
class GiveUp:
    condition: str  # ATTEMPTS_EXHAUSTED | AGE_EXCEEDED | NOT_RETRYABLE


def backoff(policy: RetryPolicy, retry_number: int, rand: random.Random | None = None) -> float:
    cap = min(policy.backoff_max_seconds, policy.backoff_base_seconds * 2 ** max(0, retry_number - 1))
    return (rand or random).uniform(0, cap)


def after_failure(policy: RetryPolicy, attempt: int, first_enqueued: float, now: float,
                  rand: random.Random | None = None, retry_after: float | None = None) -> Retry | GiveUp:
    """`attempt` is the 1-based number of the attempt that just failed.

    `retry_after` is the wait the target asked for (HTTP Retry-After): as EventBridge does, the
    later of it and the backoff wins, and a negative one stops the retries."""
    if retry_after is not None and retry_after < 0:
        return GiveUp(NOT_RETRYABLE)
    if attempt > policy.maximum_retry_attempts:
        return GiveUp(ATTEMPTS_EXHAUSTED)
    due = now + max(backoff(policy, attempt, rand), retry_after or 0.0)
    if due - first_enqueued > policy.maximum_event_age_seconds:
        return GiveUp(AGE_EXCEEDED)
    return Retry(due)


def too_old(policy: RetryPolicy, first_enqueued: float, now: float) -> bool:
    return now - first_enqueued > policy.maximum_event_age_seconds
