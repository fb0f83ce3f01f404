"""Observability: every metric appears with its type and moves; JSON logs carry delivery fields."""
import json
import time
from datetime import datetime, timedelta, timezone

from bus.local.redisproc import free_port
from tests.conftest import FUNCTIONS, wait_for
from tests.httpc import get_text, metric, post, scrape

FAST = "{maximum_retry_attempts: %d, backoff_base_seconds: 0.05, backoff_max_seconds: 0.1}"


def rules() -> str:
    at = (datetime.now(timezone.utc) + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S")
    return f"""
functions:
  probe.slow: {{reserved_concurrency: 1}}
rules:
  - name: ok
    event_pattern: {{source: [ok]}}
    targets: [{{id: t, function: probe.record}}]
  - name: bad
    event_pattern: {{source: [bad]}}
    targets: [{{id: t, function: probe.fail, dead_letter: true, retry_policy: {FAST % 1}}}]
  - name: dropped
    event_pattern: {{source: [drop]}}
    targets: [{{id: t, function: probe.fail, retry_policy: {FAST % 0}}}]
  - name: busy
    event_pattern: {{source: [busy]}}
    targets: [{{id: t, function: probe.slow}}]
  - name: tick
    schedule: at({at})
    targets: [{{id: t, function: probe.record}}]
"""


BROKER = {
    "busway_events_ingested_total": "counter", "busway_events_rejected_total": "counter",
    "busway_matched_events_total": "counter", "busway_rule_matches_total": "counter",
    "busway_deliveries_enqueued_total": "counter", "busway_put_events_duration_seconds": "histogram",
    "busway_put_events_requests_total": "counter", "busway_put_events_request_size_bytes": "histogram",
    "busway_schedule_firings_total": "counter", "busway_schedule_lateness_seconds": "histogram",
    "busway_queue_depth": "gauge", "busway_queue_pending": "gauge", "busway_queue_delayed": "gauge",
    "busway_queue_oldest_age_seconds": "gauge", "busway_dlq_depth": "gauge",
}
WORKER = {
    "busway_invocations_total": "counter", "busway_invocation_errors_total": "counter",
    "busway_throttles_total": "counter", "busway_retries_total": "counter",
    "busway_dead_letters_total": "counter", "busway_dropped_events_total": "counter",
    "busway_handler_duration_seconds": "histogram", "busway_ingestion_to_invocation_start_seconds": "histogram",
    "busway_concurrent_executions": "gauge", "busway_worker_concurrency_limit": "gauge",
    "busway_ingestion_to_invocation_complete_seconds": "histogram",
}


def types(text: str) -> dict[str, str]:
    return {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_every_metric_appears_with_its_type_and_moves_under_load(stack):
    stack.write_rules(rules())
    stack.start_broker()
    port = free_port()
    stack.start_worker(metrics_port=port)
    ev = lambda src, **d: {"source": src, "detail-type": "T", "detail": d}  # noqa: E731
    post(stack.url + "/events", [ev("ok"), ev("ok"), ev("bad"), ev("drop"), ev("busy", seconds=0.3),
                                 ev("busy", seconds=0.3), ev("nobody"), {"source": "x", "detail-type": "y", "detail": "no"}])
    worker_url = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: metric(scrape(worker_url), "busway_dead_letters_total", target="default/bad/t",
                            condition="MaximumRetryAttemptsExhausted") == 1, what="a dead letter")
    wait_for(lambda: metric(get_text(stack.url + "/metrics"), "busway_schedule_firings_total",
                            bus="default", rule="tick") == 1, timeout=20, what="the at() schedule firing")
    wait_for(lambda: sum(1 for c in stack.records() if c["handler"] == "slow") == 2, what="both slow events")
    broker, worker = get_text(stack.url + "/metrics"), get_text(worker_url)
    for name, kind in BROKER.items():
        assert types(broker).get(name) == kind, f"broker {name} should be a {kind}"
    for name, kind in WORKER.items():
        assert types(worker).get(name) == kind, f"worker {name} should be a {kind}"
    assert metric(broker, "busway_events_ingested_total", bus="default") == 7
    assert metric(broker, "busway_events_rejected_total", bus="default", error_code="MalformedDetail") == 1
    assert metric(broker, "busway_matched_events_total", bus="default") == 6
    assert metric(broker, "busway_rule_matches_total", bus="default", rule="ok") == 2
    assert metric(broker, "busway_deliveries_enqueued_total", bus="default", rule="busy", target="default/busy/t") == 2
    assert metric(broker, "busway_put_events_requests_total", api="native", outcome="partial") == 1
    assert metric(broker, "busway_put_events_request_size_bytes_count", api="native") == 1
    assert metric(broker, "busway_put_events_duration_seconds_count", api="native") == 1
    assert metric(broker, "busway_dlq_depth", dlq="default/bad/t") == 1
    assert metric(worker, "busway_invocations_total", function="probe.record", target="default/ok/t") >= 2
    assert metric(worker, "busway_invocation_errors_total", function="probe.fail", target="default/bad/t", kind="exception") == 2
    assert metric(worker, "busway_retries_total", target="default/bad/t") == 1
    assert metric(worker, "busway_dropped_events_total", target="default/dropped/t", condition="MaximumRetryAttemptsExhausted") == 1
    assert metric(worker, "busway_throttles_total", function="probe.slow", target="default/busy/t") >= 1
    assert metric(worker, "busway_worker_concurrency_limit") == 10
    assert metric(worker, "busway_ingestion_to_invocation_complete_seconds_count", target="default/ok/t", outcome="success") == 2
    assert metric(worker, "busway_ingestion_to_invocation_complete_seconds_count", target="default/bad/t", outcome="failure") == 2
    assert metric(worker, "busway_handler_duration_seconds_count", function="probe.slow") == 2
    assert metric(worker, "busway_ingestion_to_invocation_start_seconds_count", target="default/ok/t") == 2
    assert metric(worker, "busway_concurrent_executions", function="probe.slow") == 0


def test_queue_gauges_show_waiting_deliveries(stack):
    stack.write_rules("rules:\n  - {name: ok, event_pattern: {source: [ok]}, targets: [{id: t, function: probe.record}]}\n")
    stack.start_broker()  # no worker: deliveries wait
    post(stack.url + "/events", [{"source": "ok", "detail-type": "T", "detail": {}}] * 3)
    time.sleep(1.1)
    text = get_text(stack.url + "/metrics")
    assert metric(text, "busway_queue_depth", target="default/ok/t") == 3
    assert metric(text, "busway_queue_oldest_age_seconds", target="default/ok/t") >= 1


def test_json_logs_carry_event_id_rule_target_and_attempt(stack):
    stack.write_rules(f"""
rules:
  - name: bad
    event_pattern: {{source: [bad]}}
    targets: [{{id: t, function: probe.fail, retry_policy: {FAST % 1}}}]
""")
    stack.start_broker()
    stack._spawn(["--log-format", "json", "worker", "--functions", str(FUNCTIONS), "--metrics-port", "0"], "jsonworker")
    _, body = post(stack.url + "/events", {"source": "bad", "detail-type": "T", "detail": {}})
    event_id = body["Entries"][0]["EventId"]
    log = stack.root / f"jsonworker-{len(stack.procs) - 1}.log"
    lines = wait_for(lambda: [json.loads(x) for x in log.read_text().splitlines()
                              if x.startswith("{") and event_id in x and "dropped" in x] and
                     [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{") and event_id in x],
                     what="json delivery lines")
    assert len(lines) == 2  # the retry, then the drop
    for line in lines:
        assert line["event_id"] == event_id and line["rule"] == "bad" and line["target"] == "default/bad/t"
    assert [line["attempt"] for line in lines] == [1, 2]
