"""Delivery you can trust: retries, dead letters, redrive, timeouts, concurrency, destinations."""
import json
import time

import pytest

from bus.store.deliveries import Delivery
from bus.store.keys import delayed_key, stream_key
from bus.store.queue import Queue
from tests.conftest import wait_for
from tests.httpc import get_text, metric, post

FAST_RETRY = "{maximum_retry_attempts: %d, backoff_base_seconds: 0.05, backoff_max_seconds: 0.2}"


def rules(function: str, retries: int = 2, extra_target: str = "", functions: str = "") -> str:
    return f"""
functions:
  {functions or 'probe.record: {}'}
rules:
  - name: r
    event_pattern: {{source: [t]}}
    targets:
      - id: t1
        function: {function}
        retry_policy: {FAST_RETRY % retries}
        {extra_target}
"""


def event(**detail) -> dict:
    return {"source": "t", "detail-type": "T", "detail": detail}


def start(stack, text: str, workers: int = 1, **kw):
    stack.write_rules(text)
    stack.start_broker()
    return [stack.start_worker(**kw) for _ in range(workers)]


@pytest.mark.cluster
def test_handler_failing_twice_then_succeeding_runs_three_times_and_succeeds_once(stack, r):
    start(stack, rules("probe.flaky", retries=5))
    post(stack.url + "/events", event())
    calls = stack.wait_records(3)
    time.sleep(0.5)  # room for a wrong fourth call to show up
    calls = stack.records()
    assert [c["n"] for c in calls] == [1, 2, 3]
    assert [c["context"]["attempt"] for c in calls] == [1, 2, 3]
    assert len({c["context"]["aws_request_id"] for c in calls}) == 1, "request id is stable across retries"
    wait_for(lambda: r.xlen(stream_key("default/r/t1")) == 0 and r.zcard(delayed_key("default/r/t1")) == 0)
    assert stack.bus("dlq", "list").stdout == ""


@pytest.mark.cluster
def test_always_failing_handler_with_two_retries_leaves_one_dead_letter(stack):
    start(stack, rules("probe.fail", retries=2, extra_target="dead_letter: true"))
    _, body = post(stack.url + "/events", event(x=1))
    event_id = body["Entries"][0]["EventId"]
    lines = wait_for(lambda: stack.bus("dlq", "list").stdout.splitlines(), what="a dead letter")
    assert len(stack.records()) == 3
    [line] = lines
    assert f"event={event_id}" in line and "default/r/t1" in line
    letter = json.loads(stack.bus("dlq", "show", line.split()[0]).stdout)
    assert letter["event"]["id"] == event_id
    assert (letter["rule"], letter["target"]) == ("r", "t1")
    assert letter["error_code"] == "EXCEPTION"
    assert "RuntimeError: always fails" in letter["error_message"]
    assert letter["retry_attempts"] == 2
    assert letter["exhausted_retry_condition"] == "MaximumRetryAttemptsExhausted"
    assert letter["first_enqueued"] <= letter["failed_at"]


@pytest.mark.cluster
def test_redrive_puts_a_dead_letter_back_with_attempts_reset(stack):
    start(stack, rules("probe.fail", retries=0, extra_target="dead_letter: true"))
    post(stack.url + "/events", event())
    wait_for(lambda: stack.bus("dlq", "list").stdout.strip(), what="a dead letter")
    assert "redrive: 1 dead letters" in stack.bus("dlq", "redrive", "--target", "default/r/t1").stdout
    calls = stack.wait_records(2)
    assert [c["context"]["attempt"] for c in calls] == [1, 1]
    assert calls[0]["context"]["aws_request_id"] == calls[1]["context"]["aws_request_id"]
    wait_for(lambda: stack.bus("dlq", "list").stdout.strip(), what="dead-lettered again")


def test_dead_letters_can_be_purged(stack):
    start(stack, rules("probe.fail", retries=0, extra_target="dead_letter: true"))
    post(stack.url + "/events", [event(), event()])
    wait_for(lambda: len(stack.bus("dlq", "list").stdout.splitlines()) == 2, what="two dead letters")
    assert "purge: 2 dead letters" in stack.bus("dlq", "purge").stdout
    assert stack.bus("dlq", "list").stdout == ""


def test_dead_letters_over_http(stack):
    start(stack, rules("probe.fail", retries=0, extra_target="dead_letter: true"))
    post(stack.url + "/events", event())
    letters = wait_for(lambda: json.loads(get_text(stack.url + "/dlq"))["dead_letters"], what="a dead letter")
    one = json.loads(get_text(f"{stack.url}/dlq/{letters[0]['id']}"))
    assert one["exhausted_retry_condition"] == "MaximumRetryAttemptsExhausted"
    status, body = post(stack.url + "/dlq/purge", {"ids": [letters[0]["id"]]})
    assert (status, body) == (200, {"purged": 1})


def test_exhausted_event_without_dlq_is_dropped_and_counted(stack):
    start(stack, rules("probe.fail", retries=0), metrics_port=(port := _port()))
    post(stack.url + "/events", event())
    stack.wait_records(1)
    text = wait_for(lambda: (t := get_text(f"http://127.0.0.1:{port}/metrics")) and
                    metric(t, "busway_dropped_events_total", target="default/r/t1",
                           condition="MaximumRetryAttemptsExhausted") == 1 and t, what="dropped counter")
    assert metric(text, "busway_invocation_errors_total", function="probe.fail", target="default/r/t1", kind="exception") == 1


def test_event_older_than_maximum_age_goes_to_dlq_with_that_condition(stack, r):
    text = rules("probe.record", extra_target="dead_letter: true").replace(
        "maximum_retry_attempts: 2,", "maximum_retry_attempts: 2, maximum_event_age_seconds: 60,")
    stack.write_rules(text)
    stack.start_broker()
    import asyncio

    import msgspec
    import redis.asyncio as aioredis
    old = time.time() - 120
    delivery = Delivery(id="req-1", event=msgspec.Raw(json.dumps({"id": "ev-old", "detail": {}}).encode()),
                        bus="default", rule="r", target="t1", function="probe.record", first_enqueued=old, ingested=old)

    async def put():
        client = aioredis.from_url(stack.redis_url)
        await Queue(client).enqueue([delivery])
        await client.aclose()
    asyncio.run(put())
    stack.start_worker()
    line = wait_for(lambda: stack.bus("dlq", "list").stdout.strip(), what="a dead letter")
    assert "event=ev-old" in line and "MaximumEventAgeExceeded" in line
    assert stack.records() == [], "an expired event is not invoked"


def test_sync_handler_stuck_in_a_loop_is_killed_as_a_timeout(stack):
    start(stack, rules("probe.spin", retries=0, extra_target="dead_letter: true",
                       functions="probe.spin: {timeout: 0.5}"), metrics_port=(port := _port()))
    post(stack.url + "/events", event())
    line = wait_for(lambda: stack.bus("dlq", "list").stdout.strip(), what="timeout dead letter")
    assert "TIMEOUT" in line
    text = get_text(f"http://127.0.0.1:{port}/metrics")
    assert metric(text, "busway_invocation_errors_total", function="probe.spin", target="default/r/t1", kind="timeout") == 1


def test_async_handler_over_its_timeout_is_cancelled(stack):
    start(stack, rules("probe.sleep_async", retries=0, extra_target="dead_letter: true",
                       functions="probe.sleep_async: {timeout: 0.3}"))
    post(stack.url + "/events", event())
    line = wait_for(lambda: stack.bus("dlq", "list").stdout.strip(), what="timeout dead letter")
    assert "TIMEOUT" in line


def test_worker_keeps_working_after_killing_a_timed_out_handler(stack):
    text = rules("probe.spin", retries=0, functions="probe.spin: {timeout: 0.3}") + """
  - name: ok
    event_pattern: {source: [ok]}
    targets:
      - {id: t2, function: probe.record}
"""
    start(stack, text, concurrency=1)
    post(stack.url + "/events", event())
    post(stack.url + "/events", {"source": "ok", "detail-type": "T", "detail": {}})
    wait_for(lambda: any(c["handler"] == "record" for c in stack.records()), what="the next event handled")


def test_reserved_concurrency_two_never_runs_more_than_two_at_once(stack, r):
    start(stack, rules("probe.slow", functions="probe.slow: {reserved_concurrency: 2}"), workers=2,
          metrics_port=0)
    post(stack.url + "/events", [event(seconds=0.2) for _ in range(10)])
    post(stack.url + "/events", [event(seconds=0.2) for _ in range(10)])
    wait_for(lambda: len([c for c in stack.records() if c["handler"] == "slow"]) == 20, timeout=30,
             what="20 slow handlers")
    spans = [(c["start"], c["end"]) for c in stack.records() if c["handler"] == "slow"]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2, f"at most 2 at once, saw {most}"


@pytest.mark.cluster
def test_on_success_and_on_failure_destinations_receive_invocation_records(stack):
    text = f"""
buses:
  - name: results
rules:
  - name: ok
    event_pattern: {{source: [ok]}}
    targets:
      - {{id: t, function: probe.record_async, on_success: results}}
  - name: bad
    event_pattern: {{source: [bad]}}
    targets:
      - {{id: t, function: probe.fail, on_failure: results, retry_policy: {FAST_RETRY % 1}}}
  - name: collect
    bus: results
    event_pattern: {{source: [lambda]}}
    targets:
      - {{id: t, function: probe.record}}
"""
    start(stack, text)
    post(stack.url + "/events", [{"source": "ok", "detail-type": "T", "detail": {"a": 1}},
                                 {"source": "bad", "detail-type": "T", "detail": {"b": 2}}])
    records = wait_for(lambda: [c for c in stack.records() if c["handler"] == "record"][:2]
                       if len([c for c in stack.records() if c["handler"] == "record"]) >= 2 else None,
                       what="two invocation records")
    by_type = {c["event"]["detail-type"]: c["event"]["detail"] for c in records}
    ok = by_type["Lambda Function Invocation Result - Success"]
    assert ok["requestContext"]["condition"] == "Success"
    assert ok["requestPayload"]["detail"] == {"a": 1}
    assert ok["responsePayload"] == {"ok": True}
    bad = by_type["Lambda Function Invocation Result - Failure"]
    assert bad["requestContext"]["condition"] == "RetriesExhausted"
    assert bad["requestContext"]["approximateInvokeCount"] == 2
    assert bad["responseContext"]["functionError"] == "Unhandled"
    assert "always fails" in bad["responsePayload"]["errorMessage"]


def _port() -> int:
    from bus.local.redisproc import free_port
    return free_port()


@pytest.mark.cluster
def test_targets_can_share_a_named_dead_letter_queue(stack):
    stack.write_rules(f"""
rules:
  - name: a
    event_pattern: {{source: [a]}}
    targets: [{{id: t, function: probe.fail, dead_letter: shared-dlq, retry_policy: {FAST_RETRY % 0}}}]
  - name: b
    event_pattern: {{source: [b]}}
    targets: [{{id: t, function: probe.fail, dead_letter: shared-dlq, retry_policy: {FAST_RETRY % 0}}}]
""")
    stack.start_broker()
    stack.start_worker()
    post(stack.url + "/events", [{"source": "a", "detail-type": "T", "detail": {}},
                                 {"source": "b", "detail-type": "T", "detail": {}}])
    lines = wait_for(lambda: len(out := stack.bus("dlq", "list").stdout.splitlines()) == 2 and out,
                     what="two dead letters")
    assert all(line.endswith("dlq=shared-dlq") for line in lines)
    assert sorted(line.split()[1] for line in lines) == ["default/a/t", "default/b/t"]
    assert "redrive: 1 dead letters" in stack.bus("dlq", "redrive", "--target", "default/b/t").stdout


def test_an_entry_that_is_no_delivery_is_dead_lettered_and_the_worker_goes_on(stack, r):
    start(stack, rules("probe.record", extra_target="dead_letter: true"))
    r.xadd(stream_key("default/r/t1"), {"d": b"not a delivery"})  # written by hand, or by another format
    _, body = post(stack.url + "/events", event(x=1))
    wait_for(lambda: len(stack.records()) == 1, what="the good event handled after the poison entry")
    lines = wait_for(lambda: stack.bus("dlq", "list").stdout.splitlines(), what="the poison entry dead-lettered")
    letter = json.loads(stack.bus("dlq", "show", lines[0].split()[0]).stdout)
    assert letter["error_code"] == "UNDECODABLE" and "not a delivery" in letter["error_message"]
    assert r.xlen(stream_key("default/r/t1")) == 0, "both entries finished"
