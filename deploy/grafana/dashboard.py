"""Writes dashboards/busway.json: the busway Grafana dashboard, one panel per CloudWatch number.

The JSON is generated so the PromQL stays readable here (one line per query) and every panel
gets the same datasource reference: the provisioned datasource's fixed uid, never
`${DS_PROMETHEUS}` (file provisioning does not resolve `__inputs`).

    python deploy/grafana/dashboard.py          # rewrite dashboards/busway.json
    python deploy/grafana/dashboard.py --check  # exit 1 if the JSON is out of date (the tests do this)

Queue panels prefer busway's own gauges (busway_queue_*, busway_dlq_depth) and fall back to
redis_exporter's view of the same streams, so they work whichever of the two is there.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

DATASOURCE_UID = "busway-prometheus"  # = uid in provisioning/datasources/prometheus.yml
DS = {"type": "prometheus", "uid": DATASOURCE_UID}
OUT = Path(__file__).parent / "dashboards" / "busway.json"

RI = "[$__rate_interval]"
BUS = 'bus=~"$bus"'
TARGET = 'target=~"$target"'
FUNCTION = 'function=~"$function"'
KIND = 'target_kind=~"$target_kind"'

# busway_target_info (one series per target: its target_kind and what it invokes), from the
# brokers, joined to the workers' per-target series on `target`.
TARGET_INFO = f"max by (target, target_kind) (busway_target_info{{{KIND}}})"


def by_kind(metric: str, by: str) -> str:
    """A worker counter's rate per target kind (and `by`), every kind of target alike."""
    group = f"target_kind, {by}" if by else "target_kind"
    return (f"sum by ({group}) (rate({metric}{{{TARGET}}}{RI}) "
            f"* on (target) group_left (target_kind) {TARGET_INFO})")


def _from_stream(expr: str, label: str, regex: str) -> str:
    """redis_exporter labels a stream by key; copy the busway name out of it into `label`."""
    return f'label_replace({expr}, "{label}", "$1", "stream", "{regex}")'


# busway:{<bus>/<rule>/<target>}:q -> target; busway:dlq:{<name>} -> dlq. `\\{` is a regex `\{`.
QUEUE_STREAMS = 'stream=~"busway:\\\\{$target\\\\}:q"'
QUEUE_RE = "busway:\\\\{(.+)\\\\}:q"
DLQ_STREAMS = 'stream=~"busway:dlq:.+"'
DLQ_RE = "busway:dlq:\\\\{(.+)\\\\}"


def queue_gauge(busway_metric: str, exporter_expr: str) -> str:
    return (f"max by (target) ({busway_metric}{{{TARGET}}}) or "
            f"max by (target) ({_from_stream(exporter_expr, 'target', QUEUE_RE)})")


def _sel(selector: str) -> str:
    return f"{{{selector}}}" if selector else ""


def quantiles(metric: str, by: str, selector: str = "") -> list[tuple[str, str]]:
    legend = "/".join("{{" + label + "}}" for label in by.split(", ")) if by else ""
    group = f"{by}, le" if by else "le"
    return [(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{_sel(selector)}{RI})))",
             f"p{int(q * 100)} {legend}".strip()) for q in (0.5, 0.9, 0.99)]


def rate(metric: str, by: str, selector: str = "") -> str:
    return f"sum by ({by}) (rate({metric}{_sel(selector)}{RI}))"


# Each row: (title, [(panel title, unit, description naming the CloudWatch metric, [(expr, legend)])]).
ROWS = [
    ("Overview", [
        ("Events ingested / s", "stat:reqps", "All buses. EventBridge PutEventsEntriesCount minus failed entries.",
         [(f"sum(rate(busway_events_ingested_total{{{BUS}}}{RI}))", "")]),
        ("Invocation errors / s", "stat:reqps", "All targets. Lambda Errors.",
         [(f"sum(rate(busway_invocation_errors_total{{{TARGET}}}{RI}))", "")]),
        ("Queued deliveries", "stat:short", "Waiting plus in flight, all targets.",
         [(f"sum({queue_gauge('busway_queue_depth', f'redis_stream_length{{{QUEUE_STREAMS}}}')})", "")]),
        ("Dead letters kept", "stat:short", "All DLQs. EventBridge InvocationsSentToDlq, accumulated.",
         [("sum(max by (dlq) (busway_dlq_depth) or "
           f"max by (dlq) ({_from_stream(f'redis_stream_length{{{DLQ_STREAMS}}}', 'dlq', DLQ_RE)}))", "")]),
    ]),
    ("Ingest (PutEvents)", [
        ("Events ingested / s by bus", "reqps", "EventBridge PutEventsEntriesCount minus PutEventsFailedEntriesCount.",
         [(rate("busway_events_ingested_total", "bus", BUS), "{{bus}}")]),
        ("Entries rejected / s by error code", "reqps", "EventBridge PutEventsFailedEntriesCount, by AWS error code.",
         [(rate("busway_events_rejected_total", "bus, error_code", BUS), "{{bus}} {{error_code}}")]),
        ("PutEvents calls / s by API and outcome", "reqps",
         "EventBridge PutEventsApproximateCallCount / ...SuccessCount / ...FailedCount "
         "(success: all entries accepted; partial: some entries failed; failed: the request was refused).",
         [(rate("busway_put_events_requests_total", "api, outcome"), "{{api}} {{outcome}}")]),
        ("PutEvents request size", "bytes", "EventBridge PutEventsRequestSize.",
         quantiles("busway_put_events_request_size_bytes", "api")),
        ("PutEvents latency", "s", "EventBridge PutEventsLatency: body read to answer, deliveries stored in Redis.",
         quantiles("busway_put_events_duration_seconds", "")),
    ]),
    ("Rules", [
        ("Matched events / s by bus", "reqps", "EventBridge MatchedEvents: events that matched at least one rule.",
         [(rate("busway_matched_events_total", "bus", BUS), "{{bus}}")]),
        ("Matches / s per rule", "reqps", "EventBridge TriggeredRules.",
         [(rate("busway_rule_matches_total", "bus, rule", BUS), "{{bus}}/{{rule}}")]),
        ("Invocations created / s per target", "reqps",
         "EventBridge InvocationsCreated, Lambda AsyncEventsReceived: deliveries written to a target queue.",
         [(rate("busway_deliveries_enqueued_total", "target", BUS), "{{target}}")]),
    ]),
    ("Targets", [
        ("Invocations / s per target", "reqps", "EventBridge InvocationAttempts, Lambda Invocations. target = bus/rule/target.",
         [(rate("busway_invocations_total", "target", TARGET), "{{target}}")]),
        ("Errors / s per target", "reqps",
         "Lambda Errors by kind: exception, timeout, killed, import (functions); http_4xx, http_5xx, network, timeout "
         "(API destinations); loop (bus targets).",
         [(rate("busway_invocation_errors_total", "target, kind", TARGET), "{{target}} {{kind}}")]),
        ("Error ratio per target", "percentunit", "Failed attempts / attempts. The BuswayRuleFailing alert fires above 50%.",
         [(f"{rate('busway_invocation_errors_total', 'target', TARGET)} / "
           f"{rate('busway_invocations_total', 'target', TARGET)}", "{{target}}")]),
        ("Throttles / s per target", "reqps",
         "Lambda Throttles: deliveries held back by their function's reserved concurrency or their API destination's "
         "invocation rate limit (no attempt used).",
         [(rate("busway_throttles_total", "function, target", TARGET), "{{target}} ({{function}})")]),
        ("Retries / s per target", "reqps", "EventBridge RetryInvocationAttempts.",
         [(rate("busway_retries_total", "target", TARGET), "{{target}}")]),
        ("Invocations / s by target kind", "reqps",
         "Attempts of every kind: function (a handler), http (an API destination request), bus (an event sent on "
         "to another bus).",
         [(by_kind("busway_invocations_total", ""), "{{target_kind}}")]),
        ("Errors / s by target kind and error kind", "reqps",
         "Failed attempts by target kind and error kind (http_4xx and http_5xx are the HTTP status class).",
         [(by_kind("busway_invocation_errors_total", "kind"), "{{target_kind}} {{kind}}")]),
        ("Attempt duration per target", "s",
         "Every kind: a handler's run, an HTTP request to an API destination, a bus forward.",
         quantiles("busway_invocation_duration_seconds", "target", TARGET)),
        ("Bus loops / s per target", "reqps",
         "Events a bus target did not send on: they had crossed 5 buses already (a loop of bus targets). "
         "Each also fails its delivery with kind loop, to the target's DLQ if it has one.",
         [(rate("busway_bus_loops_total", "target", TARGET), "{{target}}")]),
        ("Permanent failures / s per target", "reqps",
         "EventBridge FailedInvocations: sent to a DLQ (InvocationsSentToDlq) or dropped (Lambda AsyncEventsDropped).",
         [(rate("busway_dead_letters_total", "target, condition", TARGET), "to DLQ {{target}} {{condition}}"),
          (rate("busway_dropped_events_total", "target, condition", TARGET), "dropped {{target}} {{condition}}")]),
    ]),
    ("Latency", [
        ("Handler duration per function", "s", "Lambda Duration.",
         quantiles("busway_handler_duration_seconds", "function", FUNCTION)),
        ("Ingestion to invocation start per target", "s",
         "EventBridge IngestionToInvocationStartLatency. AWS reads > 30 s sustained as a disruption.",
         quantiles("busway_ingestion_to_invocation_start_seconds", "target", TARGET)),
        ("Ingestion to invocation success per target", "s",
         "EventBridge IngestionToInvocationSuccessLatency (the attempt that succeeded, retries included).",
         quantiles("busway_ingestion_to_invocation_complete_seconds", "target", f'{TARGET}, outcome="success"')),
        ("Ingestion to invocation complete per target", "s",
         "EventBridge IngestionToInvocationCompleteLatency: any outcome (success or failure) of an attempt.",
         quantiles("busway_ingestion_to_invocation_complete_seconds", "target", TARGET)),
    ]),
    ("Queues", [
        ("Queue depth per target", "short", "Deliveries in the target's stream: waiting plus in flight.",
         [(queue_gauge("busway_queue_depth", f"redis_stream_length{{{QUEUE_STREAMS}}}"), "{{target}}")]),
        ("In flight and delayed per target", "short",
         "In flight: handed to a worker, not finished. Delayed: waiting for a retry.",
         [(queue_gauge("busway_queue_pending",
                       f'redis_stream_group_messages_pending{{{QUEUE_STREAMS}, group="busway"}}'), "in flight {{target}}"),
          (f"max by (target) (busway_queue_delayed{{{TARGET}}})", "delayed {{target}}")]),
        ("Oldest queued event age per target", "s", "Lambda AsyncEventAge / IteratorAge. Alert BuswayOldEventsInQueue above 5 min.",
         [(queue_gauge("busway_queue_oldest_age_seconds",
                       f"(time() - redis_stream_first_entry_id{{{QUEUE_STREAMS}}} / 1000) and redis_stream_length > 0"),
           "{{target}}")]),
        ("DLQ depth", "short", "Dead letters kept per DLQ. Alert BuswayDeadLetterQueueGrowing when it grows.",
         [("max by (dlq) (busway_dlq_depth) or "
           f"max by (dlq) ({_from_stream(f'redis_stream_length{{{DLQ_STREAMS}}}', 'dlq', DLQ_RE)})", "{{dlq}}")]),
    ]),
    ("Schedules", [
        ("Schedule lateness per rule", "s", "Scheduled time to enqueue.",
         quantiles("busway_schedule_lateness_seconds", "bus, rule", BUS)),
        ("Schedule firings and misses / s", "reqps", "Misses: scheduled times skipped by the catch-up policy.",
         [(rate("busway_schedule_firings_total", "bus, rule", BUS), "fired {{bus}}/{{rule}}"),
          (rate("busway_schedule_misses_total", "bus, rule", BUS), "missed {{bus}}/{{rule}}")]),
    ]),
    ("Invoke and SQS", [
        ("Invoke calls / s by function and outcome", "reqps",
         "Lambda's Invoke on the brokers (Invocations and Throttles as callers see them): ok, function_error, "
         "throttled (429), queued (Event), dry_run, invalid.",
         [(rate("busway_invoke_requests_total", "function, type, outcome", FUNCTION), "{{function}} {{type}} {{outcome}}")]),
        ("Synchronous Invoke latency per function", "s", "RequestResponse: request read to answer, queueing included.",
         quantiles("busway_invoke_duration_seconds", "function", FUNCTION)),
        ("SQS messages / s by queue and action", "reqps",
         "SQS NumberOfMessagesSent / Received / Deleted through the SQS API.",
         [(rate("busway_sqs_messages_total", "queue, action"), "{{queue}} {{action}}")]),
    ]),
    ("Workers", [
        ("Concurrent executions per function", "short", "Lambda ConcurrentExecutions, summed over worker processes.",
         [(f"sum by (function) (busway_concurrent_executions{{{FUNCTION}}})", "{{function}}")]),
        ("Worker capacity in use", "percentunit", "Running handlers / the sum of every worker's --concurrency.",
         [("sum(busway_concurrent_executions) / sum(busway_worker_concurrency_limit)", "in use")]),
        ("Processes up", "short", "Brokers and workers Prometheus scrapes successfully.",
         [('sum by (job) (up{job=~"busway-.*"})', "{{job}}")]),
    ]),
]

VARIABLES = [  # (name, label_values query): every value plus "All" (.*)
    ("bus", "label_values(busway_events_ingested_total, bus)"),
    ("target_kind", "label_values(busway_target_info, target_kind)"),
    ("target", "label_values(busway_invocations_total, target)"),
    ("function", "label_values(busway_invocations_total, function)"),
]


def panel(pid: int, title: str, unit: str, description: str, queries, x: int, y: int, w: int, h: int) -> dict:
    kind, _, unit = unit.rpartition(":")
    targets = [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend or "__auto",
                "range": True}
               for i, (expr, legend) in enumerate(queries)]
    out = {"id": pid, "type": kind or "timeseries", "title": title, "description": description,
           "datasource": DS, "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
           "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}}
    if out["type"] == "timeseries":
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                          "tooltip": {"mode": "multi", "sort": "desc"}}
    else:
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "area", "textMode": "auto"}
    return out


def build() -> dict:
    panels, pid, y = [], 1, 0
    for row_title, row_panels in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False, "panels": [],
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}})
        pid, y = pid + 1, y + 1
        stats = all(p[1].startswith("stat:") for p in row_panels)
        per_line, h = (4, 4) if stats else (2, 8)
        w = 24 // per_line
        for i, (title, unit, description, queries) in enumerate(row_panels):
            panels.append(panel(pid, title, unit, description, queries,
                                x=(i % per_line) * w, y=y + (i // per_line) * h, w=w, h=h))
            pid += 1
        y += -(-len(row_panels) // per_line) * h
    templating = [{"name": name, "label": name, "type": "query", "datasource": DS,
                   "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
                   "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
                   "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}
                  for name, query in VARIABLES]
    return {
        "uid": "busway", "title": "busway", "tags": ["busway"], "editable": True,
        "description": "busway event bus: ingest, rules, targets, latency, queues, schedules, workers.",
        "schemaVersion": 39, "version": 1, "refresh": "10s", "timezone": "",
        "time": {"from": "now-1h", "to": "now"}, "graphTooltip": 1,
        "templating": {"list": templating}, "annotations": {"list": []}, "links": [], "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            sys.exit(f"{OUT} is out of date: run python {__file__}")
    else:
        OUT.write_text(text)
        print(f"wrote {OUT}")
