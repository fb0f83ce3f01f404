"""Lambda's pull model: a rule's `queue` target fills a busway SQS queue, an event source mapping
polls it, and the function's partial batch failures come back until the queue's redrive policy
moves them to its dead-letter queue."""
from __future__ import annotations

import json

import boto3
import msgspec
import pytest

from bus.store.sqs import Message, Received
from bus.worker.esm import records_that_fit, settle, sqs_event, sqs_record
from bus.worker.slot import Reply
from tests.conftest import wait_for

RULES = """\
queues:
  - name: orders-in
    visibility_timeout: 2
    redrive_policy: {dead_letter_queue: orders-dlq, max_receive_count: 2}
  - name: orders-dlq
functions:
  lambdas.batch: {timeout: 1}
event_source_mappings:
  - queue: orders-in
    function: lambdas.batch
    batch_size: 10
    maximum_batching_window_seconds: 0.5
    function_response_types: [ReportBatchItemFailures]
rules:
  - name: to-queue
    event_pattern: {source: [shop]}
    targets: [{id: q, queue: orders-in}]
"""


def clients(url: str):
    kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return boto3.client("events", **kw), boto3.client("sqs", **kw)


@pytest.mark.cluster
def test_a_partial_batch_failure_comes_back_until_it_is_dead_lettered(stack):
    stack.write_rules(RULES)
    stack.start_broker()
    stack.start_worker()
    events, sqs = clients(stack.url)
    entries = [{"Source": "shop", "DetailType": "order", "Detail": json.dumps({"n": n, "fail": n == 2})}
               for n in range(3)]
    assert events.put_events(Entries=entries)["FailedEntryCount"] == 0
    dlq = sqs.get_queue_url(QueueName="orders-dlq")["QueueUrl"]
    moved = wait_for(lambda: sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages"), timeout=20,
                     what="the failing record in the DLQ")
    assert json.loads(moved[0]["Body"])["detail"] == {"n": 2, "fail": True}
    calls = [r for r in stack.records() if r["handler"] == "batch"]
    by_n = {}
    for r in calls:
        by_n.setdefault(r["event"]["detail"]["n"], []).append(r["receive_count"])
    assert by_n[0] == ["1"] and by_n[1] == ["1"], "a record the function did not report is deleted"
    assert by_n[2] == ["1", "2"], "a reported one is received again, until maxReceiveCount"
    assert calls[0]["source"] == "aws:sqs" and calls[0]["arn"].endswith(":orders-in")
    work = sqs.get_queue_url(QueueName="orders-in")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=work, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_messages_sent_through_the_sqs_api_reach_the_mapping_in_one_batch(stack):
    stack.write_rules(RULES)
    stack.start_broker()
    stack.start_worker()
    _, sqs = clients(stack.url)
    url = sqs.get_queue_url(QueueName="orders-in")["QueueUrl"]
    body = lambda n: json.dumps({"detail": {"n": n}})  # noqa: E731
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": body(n)} for n in range(5)])
    recs = stack.wait_records(5)
    assert sorted(r["event"]["detail"]["n"] for r in recs) == [0, 1, 2, 3, 4]
    assert len({r["context"]["aws_request_id"] for r in recs}) == 1, "one invocation for the five"


def test_a_declared_queue_is_read_only_through_the_api(stack):
    stack.write_rules(RULES)
    stack.start_broker()
    _, sqs = clients(stack.url)
    url = sqs.get_queue_url(QueueName="orders-in")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "2" and json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] == 2
    with pytest.raises(sqs.exceptions.ClientError):
        sqs.delete_queue(QueueUrl=url)


# --- pure: the event and what is deleted ----------------------------------------------------------

def received(mid: str, body: str = "b") -> Received:
    return Received(Message(mid, body, "md5", 1000, {"k": {"DataType": "String", "StringValue": "v"}}), 2, 1500,
                    f"{mid}.0123456789abcdef")


def test_the_event_has_lambdas_sqs_record_shape():
    event = msgspec.json.decode(sqs_event([received("m1")], "arn:aws:sqs:us-east-1:0:q", "us-east-1"))
    [r] = event["Records"]
    assert r["messageId"] == "m1" and r["body"] == "b" and r["eventSource"] == "aws:sqs"
    assert r["attributes"] == {"ApproximateReceiveCount": "2", "SentTimestamp": "1000", "SenderId": "",
                               "ApproximateFirstReceiveTimestamp": "1500"}
    assert r["messageAttributes"]["k"]["stringValue"] == "v" and r["messageAttributes"]["k"]["dataType"] == "String"


def test_the_event_is_its_records_joined():
    batch = [received("m1"), received("m2", "x" * 50)]
    arn = "arn:aws:sqs:us-east-1:0:q"
    records = [msgspec.json.decode(sqs_record(r, arn, "us-east-1")) for r in batch]
    assert msgspec.json.decode(sqs_event(batch, arn, "us-east-1")) == {"Records": records}


def test_a_batch_holds_as_many_records_as_one_payload_limit_allows():
    empty = len(b'{"Records":[]}')
    assert records_that_fit([b"x" * 10, b"y" * 10, b"z" * 10], limit=empty + 21) == 2  # 10 + comma + 10
    assert records_that_fit([b"x" * 10, b"y" * 10, b"z" * 10], limit=empty + 20) == 1
    assert records_that_fit([b"x" * 10, b"y" * 10], limit=10_000) == 2
    assert records_that_fit([b"x" * 100, b"y"], limit=10) == 1, "a lone record over the limit still goes"
    assert records_that_fit([]) == 0


IDS = ["a", "b", "c"]


def ok(result) -> Reply:
    return Reply(True, result=msgspec.json.encode(result))


def test_success_deletes_the_batch_and_an_error_deletes_nothing():
    assert settle(IDS, ok(None), report_failures=False) == IDS
    assert settle(IDS, ok({"batchItemFailures": [{"itemIdentifier": "a"}]}), report_failures=False) == IDS
    assert settle(IDS, Reply(False, "exception", "E", "boom"), report_failures=True) == []


def test_reported_failures_are_kept_and_the_rest_deleted():
    assert settle(IDS, ok({"batchItemFailures": [{"itemIdentifier": "b"}]}), True) == ["a", "c"]
    assert settle(IDS, ok({"batchItemFailures": []}), True) == IDS
    assert settle(IDS, ok(None), True) == IDS


def test_an_unreadable_report_fails_the_whole_batch():
    for bad in ({"batchItemFailures": [{"itemIdentifier": ""}]}, {"batchItemFailures": [{"itemIdentifier": "zz"}]},
                {"batchItemFailures": [{"id": "a"}]}, {"wrongKey": []}, ["a"], "a"):
        assert settle(IDS, ok(bad), True) == [], bad


def test_maximum_concurrency_bounds_the_batches_running_at_once(stack):
    stack.write_rules("""\
queues:
  - {name: work, visibility_timeout: 30}
functions:
  lambdas.slow_batch: {timeout: 5}
event_source_mappings:
  - {queue: work, function: lambdas.slow_batch, batch_size: 1, maximum_concurrency: 2}
""")
    stack.start_broker()
    stack.start_worker(concurrency=10)
    _, sqs = clients(stack.url)
    url = sqs.get_queue_url(QueueName="work")["QueueUrl"]
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": "m"} for n in range(6)])
    recs = stack.wait_records(6, timeout=20)
    spans = [(r["start"], r["end"]) for r in recs]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2, spans


def test_a_batch_stops_at_lambdas_6_mb_payload_and_the_rest_comes_in_the_next(stack):
    stack.write_rules("""\
queues:
  - {name: big, visibility_timeout: 30}
functions:
  lambdas.batch: {timeout: 10}
event_source_mappings:
  - {queue: big, function: lambdas.batch, batch_size: 10, maximum_batching_window_seconds: 2}
""")
    stack.start_broker()
    stack.start_worker()
    _, sqs = clients(stack.url)
    url = sqs.get_queue_url(QueueName="big")["QueueUrl"]
    for n in range(8):  # 8 x ~900 kB: 7.2 MB, more than one 6 MiB invocation holds
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"detail": {"n": n, "pad": "x" * 900_000}}))
    recs = stack.wait_records(8, timeout=30)
    assert sorted(r["event"]["detail"]["n"] for r in recs) == list(range(8)), "each message once"
    per_call: dict[str, int] = {}
    for r in recs:
        per_call[r["context"]["aws_request_id"]] = per_call.get(r["context"]["aws_request_id"], 0) + 1
    assert len(per_call) >= 2 and max(per_call.values()) <= 6, per_call  # 7 records are over 6 MiB
