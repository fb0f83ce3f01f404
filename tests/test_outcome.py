"""What follows an attempt: the worker's pure decisions, with no Redis and no processes."""
from __future__ import annotations

import random

import msgspec
import pytest

from bus.config.model import FunctionSettings, FunctionTarget, RetryPolicy
from bus.store.deliveries import Delivery, TargetRecord
from bus.worker.invoker import Result, throttled
from bus.worker.outcome import (
    Ack, DeadLetter, Drop, Retry, Throttle, THROTTLE_DELAY, after_attempt, before_attempt,
)
from bus.worker.retry import AGE_EXCEEDED, ATTEMPTS_EXHAUSTED

NOW = 1_000_000.0


def record(reserved: int | None = None, **target) -> TargetRecord:
    target = {"id": "t", "function": "m.h", **target}
    return TargetRecord(bus="default", rule="r", target=FunctionTarget(**target),
                        function=FunctionSettings(reserved_concurrency=reserved))


def delivery(age: float = 0.0, retries: int = 0) -> Delivery:
    return Delivery(id="req", event=msgspec.Raw(b'{"id": "e"}'), bus="default", rule="r", target="t",
                    function="m.h", first_enqueued=NOW - age, ingested=NOW - age, retries=retries)


FAILED = Result(False, "exception", "ValueError", "boom")
TIMED_OUT = Result(False, "timeout", "Sandbox.Timedout", "Task timed out after 3.00 seconds")


def test_a_success_is_acked():
    assert after_attempt(record(), delivery(), 1, Result(True), NOW) == Ack(1)


def test_a_success_with_on_success_sends_the_return_value_to_that_bus():
    outcome = after_attempt(record(on_success="audit"), delivery(), 2, Result(True, result=b'{"ok": 1}'), NOW)
    assert isinstance(outcome, Ack)
    assert (outcome.notify.to_bus, outcome.notify.condition, outcome.notify.attempts) == ("audit", "Success", 2)
    assert outcome.notify.response == b'{"ok": 1}' and outcome.notify.error is None


def test_a_failure_with_retries_left_is_retried_after_a_backoff_within_the_policy():
    policy = RetryPolicy(maximum_retry_attempts=3, backoff_base_seconds=2.0, backoff_max_seconds=10.0)
    outcome = after_attempt(record(retry_policy=policy), delivery(), 1, FAILED, NOW, random.Random(1))
    assert isinstance(outcome, Retry)
    assert NOW <= outcome.due <= NOW + 2.0
    assert outcome.retries == 1
    assert outcome.message == "ValueError: boom"


def test_the_last_allowed_attempt_failing_dead_letters_with_the_error():
    policy = RetryPolicy(maximum_retry_attempts=2)
    outcome = after_attempt(record(retry_policy=policy, dead_letter=True), delivery(), 3, TIMED_OUT, NOW)
    assert outcome == DeadLetter(dlq="default/r/t", code="TIMEOUT", attempts=3, condition=ATTEMPTS_EXHAUSTED,
                                 message="Sandbox.Timedout: Task timed out after 3.00 seconds")


def test_a_shared_dead_letter_queue_is_named_by_the_target():
    policy = RetryPolicy(maximum_retry_attempts=0)
    outcome = after_attempt(record(retry_policy=policy, dead_letter="shared"), delivery(), 1, FAILED, NOW)
    assert isinstance(outcome, DeadLetter) and outcome.dlq == "shared"


def test_giving_up_without_a_dead_letter_queue_drops_it():
    outcome = after_attempt(record(retry_policy=RetryPolicy(maximum_retry_attempts=0)), delivery(), 1, FAILED, NOW)
    assert outcome == Drop(code="EXCEPTION", message="ValueError: boom", condition=ATTEMPTS_EXHAUSTED, attempts=1)


def test_giving_up_with_on_failure_sends_the_error_to_that_bus():
    policy = RetryPolicy(maximum_retry_attempts=0)
    outcome = after_attempt(record(retry_policy=policy, on_failure="errors"), delivery(), 1, FAILED, NOW)
    assert outcome.notify.to_bus == "errors" and outcome.notify.condition == "RetriesExhausted"
    assert outcome.notify.error == {"errorType": "EXCEPTION", "errorMessage": "ValueError: boom"}


class _Longest(random.Random):
    """Backoff always draws its cap."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_a_retry_that_would_fall_past_the_maximum_event_age_gives_up_on_age():
    policy = RetryPolicy(maximum_event_age_seconds=60, backoff_base_seconds=30.0, backoff_max_seconds=30.0)
    outcome = after_attempt(record(retry_policy=policy, on_failure="e"), delivery(age=45), 1, FAILED, NOW, _Longest())
    assert isinstance(outcome, Drop)
    assert outcome.condition == AGE_EXCEEDED and outcome.notify.condition == "EventAgeExceeded"


def test_a_retry_that_falls_within_the_maximum_event_age_is_kept():
    policy = RetryPolicy(maximum_event_age_seconds=60, backoff_base_seconds=30.0, backoff_max_seconds=30.0)
    outcome = after_attempt(record(retry_policy=policy), delivery(age=25), 1, FAILED, NOW, _Longest())
    assert outcome == Retry(NOW + 30.0, 1, "ValueError: boom")


def test_an_import_error_is_recorded_as_import_error():
    result = Result(False, "import", "Runtime.ImportModuleError", "no module m")
    outcome = after_attempt(record(retry_policy=RetryPolicy(maximum_retry_attempts=0)), delivery(), 1, result, NOW)
    assert outcome.code == "IMPORT_ERROR"


def test_a_throttled_attempt_waits_briefly_and_uses_no_attempt():
    outcome = after_attempt(record(reserved=2), delivery(retries=4), 5, throttled(), NOW)
    assert isinstance(outcome, Throttle)
    assert NOW + THROTTLE_DELAY[0] <= outcome.due <= NOW + THROTTLE_DELAY[1]
    assert outcome.retries == 4, "the throttled attempt is given back"


def test_reserved_concurrency_zero_sends_the_event_straight_to_the_dead_letter_queue():
    outcome = after_attempt(record(reserved=0, dead_letter=True), delivery(), 1, throttled(), NOW)
    assert isinstance(outcome, DeadLetter)
    assert (outcome.code, outcome.attempts, outcome.condition) == ("THROTTLED", 0, ATTEMPTS_EXHAUSTED)


def test_a_fresh_delivery_may_run():
    assert before_attempt(record(), delivery(), 1, NOW) is None


def test_a_delivery_past_its_attempts_because_workers_died_gives_up_without_running():
    policy = RetryPolicy(maximum_retry_attempts=1)
    outcome = before_attempt(record(retry_policy=policy, dead_letter=True), delivery(), 3, NOW)
    assert isinstance(outcome, DeadLetter)
    assert (outcome.code, outcome.attempts, outcome.condition) == ("KILLED", 2, ATTEMPTS_EXHAUSTED)


def test_a_delivery_older_than_the_maximum_event_age_gives_up_without_running():
    policy = RetryPolicy(maximum_event_age_seconds=60)
    outcome = before_attempt(record(retry_policy=policy), delivery(age=61), 1, NOW)
    assert isinstance(outcome, Drop)
    assert (outcome.code, outcome.attempts, outcome.condition) == ("EVENT_AGE", 0, AGE_EXCEEDED)


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_an_attempt_within_the_policy_is_never_given_up_early(attempt):
    assert before_attempt(record(retry_policy=RetryPolicy(maximum_retry_attempts=2)), delivery(), attempt, NOW) is None
