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


@dataclass(frozen=True)
class Retry:
    due: float  # epoch seconds


@dataclass(frozen=True)
class GiveUp:
    condition: str  # ATTEMPTS_EXHAUSTED | AGE_EXCEEDED


def backoff(policy: RetryPolicy, retry_number: int, rand: random.Random | None = None) -> float:
    cap = min(policy.backoff_max_seconds, policy.backoff_base_seconds * 2 ** max(0, retry_number - 1))
    return (rand or random).uniform(0, cap)


def after_failure(policy: RetryPolicy, attempt: int, first_enqueued: float, now: float,
                  rand: random.Random | None = None) -> Retry | GiveUp:
    """`attempt` is the 1-based number of the attempt that just failed."""
    if attempt > policy.maximum_retry_attempts:
        return GiveUp(ATTEMPTS_EXHAUSTED)
    due = now + backoff(policy, attempt, rand)
    if due - first_enqueued > policy.maximum_event_age_seconds:
        return GiveUp(AGE_EXCEEDED)
    return Retry(due)


def too_old(policy: RetryPolicy, first_enqueued: float, now: float) -> bool:
    return now - first_enqueued > policy.maximum_event_age_seconds
