"""Every Prometheus metric busway exports, in one place (`busway_` prefix, base units).

Labels carry bus, rule, target, function and error kinds only: never event ids or other
unbounded values. Broker and worker processes each serve their own /metrics.

Every target kind (function, http, bus) is counted by the same worker metrics. Their
`function` label is the function of a function target and the target key (bus/rule/target)
of any other kind, as before; busway_target_info says, per target key, its `target_kind` and
what it `invokes` (the function, the API destination, the bus), to join on `target`.
"""
from __future__ import annotations

import os

os.environ.setdefault("PROMETHEUS_DISABLE_CREATED_SERIES", "True")

from prometheus_client import (  # noqa: E402  (the env var above must be set first)
    CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

# Broker
EVENTS_INGESTED = Counter("busway_events_ingested_total", "Events accepted by PutEvents, by bus.", ["bus"])
EVENTS_REJECTED = Counter("busway_events_rejected_total", "PutEvents entries rejected, by bus and AWS error code.", ["bus", "error_code"])
MATCHED_EVENTS = Counter("busway_matched_events_total", "Events that matched at least one rule (MatchedEvents).", ["bus"])
RULE_MATCHES = Counter("busway_rule_matches_total", "Times a rule matched an event (TriggeredRules).", ["bus", "rule"])
DELIVERIES_ENQUEUED = Counter("busway_deliveries_enqueued_total", "Deliveries written to a target queue (InvocationsCreated).", ["bus", "rule", "target"])
PUT_EVENTS_REQUESTS = Counter("busway_put_events_requests_total", "PutEvents calls by API and outcome (success: every entry accepted; partial; failed: the request was refused).", ["api", "outcome"])
PUT_EVENTS_SIZE = Histogram("busway_put_events_request_size_bytes", "PutEvents request body size (PutEventsRequestSize).", ["api"], buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304))
PUT_EVENTS_DURATION = Histogram("busway_put_events_duration_seconds", "PutEvents request latency, body read to answer.", ["api"], buckets=LATENCY_BUCKETS)
INVOKE_REQUESTS = Counter("busway_invoke_requests_total", "Lambda Invoke calls answered by the broker, by declared function, InvocationType and outcome (ok, function_error, throttled, queued, dry_run, invalid).", ["function", "type", "outcome"])
INVOKE_DURATION = Histogram("busway_invoke_duration_seconds", "Synchronous Invoke (RequestResponse): request read to answer, queueing and the handler included.", ["function"], buckets=LATENCY_BUCKETS)
SQS_MESSAGES = Counter("busway_sqs_messages_total", "SQS API messages by queue and action: sent, received, deleted (a queue target's and a mapping's are not counted here).", ["queue", "action"])
API_RULES_SKIPPED = Counter("busway_api_rules_skipped_total", "Stored API rules left out when loaded (reason: unreadable, invalid); counted at every load that meets one.", ["reason"])
SCHEDULE_FIRINGS = Counter("busway_schedule_firings_total", "Scheduled events emitted, by rule.", ["bus", "rule"])
SCHEDULE_MISSES = Counter("busway_schedule_misses_total", "Scheduled times skipped (catch-up policy), by rule.", ["bus", "rule"])
SCHEDULE_LATENESS = Histogram("busway_schedule_lateness_seconds", "Scheduled time to enqueue.", ["bus", "rule"], buckets=LATENCY_BUCKETS)
ARCHIVED_EVENTS = Counter("busway_archived_events_total", "Events written to an archive, by archive (replayed events are not archived again).", ["archive"])
REPLAYED_EVENTS = Counter("busway_replayed_events_total", "Archived events a replay has sent to its bus's rules again, by archive.", ["archive"])
REPLAY_LAG = Gauge("busway_replay_lag_seconds", "A running replay's EventEndTime minus the time of the last event it replayed (0 when done; the series goes when it ends).", ["replay"], multiprocess_mode="max")

# Worker
INVOCATIONS = Counter("busway_invocations_total", "Handler invocations started (Lambda Invocations).", ["function", "target"])
ERRORS = Counter("busway_invocation_errors_total", "Failed invocations by kind: exception, timeout, killed, import (functions); http_3xx, http_4xx, http_5xx, http_other, network, timeout, config (API destinations); loop (bus targets).", ["function", "target", "kind"])
THROTTLES = Counter("busway_throttles_total", "Deliveries held back by reserved concurrency or an API destination's rate limit.", ["function", "target"])
RETRIES = Counter("busway_retries_total", "Deliveries scheduled for another attempt.", ["target"])
DEAD_LETTERS = Counter("busway_dead_letters_total", "Deliveries sent to a dead-letter queue.", ["target", "condition"])
DROPPED = Counter("busway_dropped_events_total", "Deliveries dropped after exhausting retries with no DLQ (AsyncEventsDropped).", ["target", "condition"])
HANDLER_DURATION = Histogram("busway_handler_duration_seconds", "Handler run time (Duration).", ["function"], buckets=DURATION_BUCKETS)
ATTEMPT_DURATION = Histogram("busway_invocation_duration_seconds", "Attempt run time per target, every kind: a handler's run, an HTTP request, a bus forward.", ["target"], buckets=DURATION_BUCKETS)
CROSS_SLOT_DUPLICATES = Counter("busway_cross_slot_duplicates_total", "On Redis Cluster, writes known to be repeats: a follow-up (dead letter, destination record) on another slot written for a delivery another worker finished first (follow_up), an enqueue a request's retry found done already (enqueue, not a duplicate: skipped).", ["kind"])
BUS_LOOPS = Counter("busway_bus_loops_total", "Events a bus target did not forward because they had crossed 5 buses already (a loop of bus targets); each also fails its delivery (kind loop).", ["target"])
INGESTION_TO_COMPLETE = Histogram("busway_ingestion_to_invocation_complete_seconds", "PutEvents accepted to the attempt's outcome recorded (IngestionToInvocationCompleteLatency; outcome=success is ...SuccessLatency).", ["target", "outcome"], buckets=LATENCY_BUCKETS)
INGESTION_TO_START = Histogram("busway_ingestion_to_invocation_start_seconds", "PutEvents accepted to handler start (IngestionToInvocationStartLatency).", ["target"], buckets=LATENCY_BUCKETS)
CONCURRENCY_LIMIT = Gauge("busway_worker_concurrency_limit", "Handlers this worker runs at most at once (--concurrency).", multiprocess_mode="livesum")
CONCURRENT = Gauge("busway_concurrent_executions", "Handlers running now in this process.", ["function"], multiprocess_mode="livesum")

# Queue (read from Redis at scrape time)
QUEUE_DEPTH = Gauge("busway_queue_depth", "Entries in a target's stream (waiting plus in flight).", ["target"], multiprocess_mode="max")
QUEUE_PENDING = Gauge("busway_queue_pending", "Deliveries handed to a worker and not yet finished.", ["target"], multiprocess_mode="max")
QUEUE_DELAYED = Gauge("busway_queue_delayed", "Deliveries waiting for a retry.", ["target"], multiprocess_mode="max")
OLDEST_AGE = Gauge("busway_queue_oldest_age_seconds", "Age of the oldest queued delivery (AsyncEventAge).", ["target"], multiprocess_mode="max")
DLQ_DEPTH = Gauge("busway_dlq_depth", "Dead letters kept, by DLQ name.", ["dlq"], multiprocess_mode="max")
TARGET_INFO = Gauge("busway_target_info", "1 per declared target: its kind (function, http, bus) and what it invokes (the function, the API destination, the bus); join on target.", ["target", "target_kind", "invokes"], multiprocess_mode="max")


def exposition() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
