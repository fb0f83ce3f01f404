"""`bus:` targets end to end: an event sent on to another bus of this broker is matched by that
bus's rules, once; a loop of bus targets stops after 5 crossings (counted, logged, and kept by
the target's DLQ); the target's retry policy and DLQ apply as to any target."""
from __future__ import annotations

import json
import time

from bus.local.redisproc import free_port
from bus.store.keys import stream_key
from tests.conftest import wait_for
from tests.httpc import get_text, metric, post, scrape

FAST_RETRY = "{maximum_retry_attempts: 3, backoff_base_seconds: 0.05, backoff_max_seconds: 0.2}"

FORWARD = """
buses:
  - name: other
rules:
  - name: fwd
    event_pattern: {source: [t]}
    targets:
      - id: to-other
        bus: other
  - name: on-other
    bus: other
    event_pattern: {source: [t]}
    targets:
      - id: t1
        function: probe.record
"""

LOOP = f"""
buses:
  - name: other
rules:
  - name: there
    event_pattern: {{source: [t]}}
    targets:
      - id: there
        bus: other
  - name: back
    bus: other
    event_pattern: {{source: [t]}}
    targets:
      - id: back
        bus: default
        retry_policy: {FAST_RETRY}
        %s
      - id: seen
        function: probe.record
"""


def event(**detail) -> dict:
    return {"source": "t", "detail-type": "T", "detail": detail}


def start(stack, rules: str, metrics_port: int = 0) -> None:
    stack.write_rules(rules)
    stack.start_broker()
    stack.start_worker(metrics_port=metrics_port)


def put(stack, **detail) -> str:
    _, body = post(stack.url + "/events", event(**detail))
    return body["Entries"][0]["EventId"]


def settle(r, *targets: str) -> None:
    wait_for(lambda: all(r.xlen(stream_key(t)) == 0 for t in targets), what="queues drained")
    time.sleep(0.5)  # room for a wrong extra delivery to show up


def test_an_event_sent_to_a_bus_target_is_delivered_once_to_the_other_buss_rule(stack, r):
    start(stack, FORWARD)
    put(stack, order=7)
    [call] = stack.wait_records(1)
    settle(r, "default/fwd/to-other", "other/on-other/t1")
    assert len(stack.records()) == 1
    assert call["context"]["rule_name"] == "on-other"


def test_the_forwarded_event_is_the_event_unchanged(stack, r):
    start(stack, FORWARD)
    event_id = put(stack, order=7, nested={"a": [1, 2]})
    [call] = stack.wait_records(1)
    sent = call["event"]
    assert sent["id"] == event_id
    assert (sent["source"], sent["detail-type"], sent["detail"]) == ("t", "T", {"order": 7, "nested": {"a": [1, 2]}})


def test_a_bus_target_with_an_input_option_forwards_what_the_option_makes_of_the_event(stack, r):
    start(stack, FORWARD.replace("        bus: other\n", "        bus: other\n"
                                 "        input_transformer:\n"
                                 "          input_paths_map: {o: $.detail.order}\n"
                                 "          input_template: '{\"source\": \"t\", \"detail\": {\"order\": <o>, \"via\": \"<aws.events.rule-name>\"}}'\n", 1))
    put(stack, order=7)
    [call] = stack.wait_records(1)
    assert call["event"] == {"source": "t", "detail": {"order": 7, "via": "fwd"}}


def test_a_bus_target_whose_input_is_no_json_object_is_dead_lettered_not_forwarded(stack, r):
    start(stack, FORWARD.replace("        bus: other\n", "        bus: other\n        input_path: $.detail.order\n"
                                 "        dead_letter: true\n", 1))
    put(stack, order=7)
    [line] = wait_for(lambda: stack.bus("dlq", "list").stdout.splitlines(), what="a dead letter")
    letter = json.loads(stack.bus("dlq", "show", line.split()[0]).stdout)
    assert "InputNotAnEvent" in letter["error_message"]
    assert letter["exhausted_retry_condition"] == "NonRetryableError"
    assert stack.records() == []


def test_a_loop_of_bus_targets_stops_after_five_crossings_and_is_counted(stack, r):
    port = free_port()
    start(stack, LOOP % "dead_letter: true", metrics_port=port)
    event_id = put(stack)
    # default -> other (1) -> default (2) -> other (3) -> default (4) -> other (5): not sent on.
    lines = wait_for(lambda: stack.bus("dlq", "list").stdout.splitlines(), what="the looping event's dead letter")
    settle(r, "default/there/there", "other/back/back", "other/back/seen")
    assert [c["event"]["id"] for c in stack.records()] == [event_id] * 3, "other saw it at crossings 1, 3 and 5"
    worker = get_text(f"http://127.0.0.1:{port}/metrics")
    assert metric(worker, "busway_bus_loops_total", target="other/back/back") == 1
    assert metric(worker, "busway_invocation_errors_total", function="other/back/back", target="other/back/back",
                  kind="loop") == 1
    assert len(lines) == 1


def test_the_looping_event_is_kept_by_the_targets_dlq_without_retries(stack, r):
    start(stack, LOOP % "dead_letter: true")
    event_id = put(stack)
    [line] = wait_for(lambda: stack.bus("dlq", "list").stdout.splitlines(), what="a dead letter")
    letter = json.loads(stack.bus("dlq", "show", line.split()[0]).stdout)
    assert letter["event"]["id"] == event_id
    assert (letter["bus"], letter["rule"], letter["target"]) == ("other", "back", "back")
    assert letter["error_code"] == "LOOP"
    assert "crossed 5 buses" in letter["error_message"]
    assert letter["exhausted_retry_condition"] == "NonRetryableError"
    assert letter["retry_attempts"] == 0, "a loop is not retried, whatever the retry policy allows"


def test_the_loop_is_logged_once_per_event(stack, r):
    start(stack, LOOP % "dead_letter: true")
    put(stack)
    wait_for(lambda: stack.bus("dlq", "list").stdout.strip(), what="a dead letter")
    settle(r, "default/there/there", "other/back/back")
    assert stack.logs().count("crossed 5 buses") == 1


def test_without_a_dlq_the_looping_event_is_dropped_and_counted(stack, r):
    port = free_port()
    start(stack, LOOP % "", metrics_port=port)
    put(stack)
    url = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: metric(scrape(url), "busway_dropped_events_total", target="other/back/back",
                            condition="NonRetryableError") == 1, what="the dropped looping event")
    assert stack.bus("dlq", "list").stdout == ""


def test_a_bus_targets_event_older_than_its_maximum_age_is_not_forwarded(stack, r):
    rules = FORWARD.replace("        bus: other\n",
                            "        bus: other\n        retry_policy: {maximum_event_age_seconds: 60}\n"
                            "        dead_letter: true\n", 1)
    stack.write_rules(rules)
    stack.start_broker()
    put(stack)  # queued while no worker runs; then made older than the target allows
    wait_for(lambda: r.xlen(stream_key("default/fwd/to-other")) == 1, what="the queued delivery")
    _age_queued(r, "default/fwd/to-other", 120)
    stack.start_worker()
    [line] = wait_for(lambda: stack.bus("dlq", "list").stdout.splitlines(), what="a dead letter")
    letter = json.loads(stack.bus("dlq", "show", line.split()[0]).stdout)
    assert letter["exhausted_retry_condition"] == "MaximumEventAgeExceeded"
    time.sleep(0.5)
    assert stack.records() == [], "the other bus never saw it"


def _age_queued(r, target: str, seconds: float) -> None:
    """Rewrite the one queued delivery of `target` as first enqueued `seconds` ago."""
    from bus.store.keys import FIELD
    [(entry_id, fields)] = r.xrange(stream_key(target))
    delivery = json.loads(fields[FIELD])
    delivery["first_enqueued"] -= seconds
    r.xdel(stream_key(target), entry_id)
    r.xadd(stream_key(target), {FIELD: json.dumps(delivery)})
