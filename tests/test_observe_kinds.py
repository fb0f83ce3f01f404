"""Observability for every target kind: function, http and bus targets are counted by the same
worker metrics per target (invocations, errors with their kind, attempt duration), the broker
says what each target is (busway_target_info), and `bus tail` names each target's kind."""
from __future__ import annotations

import time

import pytest

from bus.local.redisproc import free_port
from bus.observe.tail import render
from tests.conftest import wait_for
from tests.httpc import get_text, metric, post, scrape
from tests.test_http_targets import SECRETS_ENV, Receiver
from tests.test_tail import start_tail, tail_text

NO_RETRY = "{maximum_retry_attempts: 0}"


def rules(endpoint: str) -> str:
    return f"""
connections:
  - name: crm
    authorization:
      api_key: {{header: x-api-key, value_from_env: CRM_KEY}}
api_destinations:
  - name: crm-orders
    connection: crm
    endpoint: {endpoint}
buses:
  - name: other
rules:
  - name: mixed
    event_pattern: {{source: [shop]}}
    targets:
      - {{id: fn, function: probe.record}}
      - {{id: crm, http: crm-orders, dead_letter: true, retry_policy: {NO_RETRY}}}
      - {{id: fwd, bus: other}}
  - name: on-other
    bus: other
    event_pattern: {{source: [shop]}}
    targets:
      - {{id: seen, function: probe.record}}
"""


@pytest.fixture
def world(stack):
    """A broker and a worker (with /metrics) routing to all three kinds; the API destination
    answers 400."""
    receiver = Receiver(lambda n, request: (400, "no such order")).start()
    port = free_port()
    stack.env.update(SECRETS_ENV)
    stack.write_rules(rules(receiver.url + "/orders"))
    stack.start_broker()
    stack.start_worker(metrics_port=port)
    stack.worker_metrics = f"http://127.0.0.1:{port}/metrics"
    yield stack
    receiver.stop()


def put(stack) -> None:
    status, body = post(stack.url + "/events", {"source": "shop", "detail-type": "OrderPlaced", "detail": {"n": 1}})
    assert status == 200 and body["FailedEntryCount"] == 0, body


TARGETS = ("default/mixed/fn", "default/mixed/crm", "default/mixed/fwd", "other/on-other/seen")


def settled(stack) -> str:
    """Worker metrics once all four attempts (fn, crm, fwd, seen) have ended."""
    def done(text: str) -> bool:
        return (all(metric(text, "busway_invocation_duration_seconds_count", target=t) == 1 for t in TARGETS)
                and metric(text, "busway_dead_letters_total", target="default/mixed/crm",
                           condition="NonRetryableError") == 1)
    deadline = time.monotonic() + 15
    while not done(text := scrape(stack.worker_metrics)):
        assert time.monotonic() < deadline, "not every target's attempt ended:\n" + "\n".join(
            line for line in text.splitlines() if "_count{" in line or "_total{" in line)
        time.sleep(0.05)
    return text


def test_the_broker_says_each_targets_kind_and_what_it_invokes(world):
    text = get_text(world.url + "/metrics")
    assert metric(text, "busway_target_info", target="default/mixed/fn", target_kind="function",
                  invokes="probe.record") == 1
    assert metric(text, "busway_target_info", target="default/mixed/crm", target_kind="http",
                  invokes="crm-orders") == 1
    assert metric(text, "busway_target_info", target="default/mixed/fwd", target_kind="bus", invokes="other") == 1


def test_every_kind_is_counted_per_target_under_the_same_metrics(world):
    put(world)
    text = settled(world)
    assert metric(text, "busway_invocations_total", function="probe.record", target="default/mixed/fn") == 1
    assert metric(text, "busway_invocations_total", function="default/mixed/crm", target="default/mixed/crm") == 1
    assert metric(text, "busway_invocations_total", function="default/mixed/fwd", target="default/mixed/fwd") == 1
    assert metric(text, "busway_invocations_total", function="probe.record", target="other/on-other/seen") == 1


def test_an_http_4xx_is_an_error_of_kind_http_4xx_of_its_target(world):
    put(world)
    text = settled(world)
    assert metric(text, "busway_invocation_errors_total", function="default/mixed/crm", target="default/mixed/crm",
                  kind="http_4xx") == 1
    assert metric(text, "busway_invocation_errors_total", function="default/mixed/fwd", target="default/mixed/fwd",
                  kind="http_4xx") == 0


def test_an_event_a_bus_target_sends_on_is_ingested_by_the_other_bus(world):
    put(world)
    settled(world)
    text = get_text(world.url + "/metrics")
    assert metric(text, "busway_events_ingested_total", bus="other") == 1
    assert metric(text, "busway_deliveries_enqueued_total", bus="other", rule="on-other",
                  target="other/on-other/seen") == 1


def test_tail_names_each_targets_kind_and_marks_forwarded_events(world, r):
    start_tail(world)
    wait_for(lambda: r.exists("busway:tail:active"), what="tail registered")

    def all_shown() -> str | None:
        put(world)
        time.sleep(0.5)
        text = tail_text(world)
        return "(bus other)" in text and "· http crm-orders" in text and "[bus]" in text and text
    text = wait_for(all_shown, timeout=20, interval=0.2, what="every kind in the tail")
    assert "default/mixed/fn (function probe.record)" in text
    assert "default/mixed/crm attempt 1: dead_letter (NonRetryableError" in text


def test_render_names_targets_it_knows_and_leaves_others_as_keys():
    names = {"default/r/a": "http crm-orders"}
    event = {"kind": "event", "at": 0.0, "bus": "default", "via": "bus", "rules": ["r"],
             "targets": ["default/r/a", "default/r/b"],
             "event": {"id": "e1", "source": "s", "detail-type": "T"}}
    text = render(event, names)
    assert "→ default/r/a (http crm-orders), default/r/b" in text
    assert "[bus]" in text
    outcome = {"kind": "outcome", "at": 0.0, "event_id": "e1", "target": "default/r/a", "attempt": 2,
               "outcome": "retry", "detail": "HTTP 503"}
    assert render(outcome, names).endswith("└ default/r/a attempt 2: retry (HTTP 503) · http crm-orders")
    assert render(outcome).endswith("└ default/r/a attempt 2: retry (HTTP 503)")
