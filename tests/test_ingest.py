"""PutEvents over HTTP (native and AWS JSON 1.1): what reaches handlers, and what is rejected."""
import json

import pytest
from botocore.exceptions import ClientError

from bus.store.keys import stream_key
from tests.httpc import aws, get_text, metric, post

RULES = """
buses:
  - name: shop
rules:
  - name: orders
    event_pattern: {source: [shop.orders], detail-type: [OrderPlaced]}
    targets:
      - {id: rec, function: probe.record}
  - name: shop-all
    bus: shop
    event_pattern: {source: [shop.orders]}
    targets:
      - {id: rec, function: probe.record_async}
"""
ORDER = {"source": "shop.orders", "detail-type": "OrderPlaced", "detail": {"amount": 120}}


@pytest.fixture
def running(stack):
    stack.write_rules(RULES)
    stack.start_broker()
    stack.start_worker()
    return stack


def test_boto3_put_events_reaches_handler_with_aws_envelope(running, events_client):
    client = events_client(running.url)
    resp = client.put_events(Entries=[{"Source": "shop.orders", "DetailType": "OrderPlaced",
                                       "Detail": json.dumps({"amount": 120}), "Resources": ["arn:x"]}])
    assert resp["FailedEntryCount"] == 0
    event_id = resp["Entries"][0]["EventId"]
    [call] = running.wait_records(1)
    event = call["event"]
    assert event["id"] == event_id
    assert set(event) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
    assert (event["version"], event["source"], event["detail-type"]) == ("0", "shop.orders", "OrderPlaced")
    assert event["detail"] == {"amount": 120}
    assert event["resources"] == ["arn:x"]
    assert event["region"] == "us-east-1" and len(event["account"]) == 12
    assert event["time"].endswith("Z")


def test_plain_http_post_reaches_handler(running):
    status, body = post(running.url + "/events", ORDER)
    assert status == 200 and body["FailedEntryCount"] == 0
    [call] = running.wait_records(1)
    assert call["event"]["id"] == body["Entries"][0]["EventId"]
    assert call["event"]["detail"] == {"amount": 120}


def test_plain_http_accepts_a_json_array_and_a_bus_field(running):
    status, body = post(running.url + "/events", [ORDER, dict(ORDER, bus="shop")])
    assert status == 200 and body["FailedEntryCount"] == 0
    calls = running.wait_records(2)
    assert sorted(c["handler"] for c in calls) == ["record", "record_async"]


def test_handler_gets_a_lambda_style_context(running):
    post(running.url + "/events", ORDER)
    [call] = running.wait_records(1)
    ctx = call["context"]
    assert ctx["function_name"] == "probe.record"
    assert ctx["invoked_function_arn"].startswith("arn:aws:lambda:us-east-1:")
    assert ctx["invoked_function_arn"].endswith(":function:probe.record")
    assert ctx["rule_name"] == "orders" and ctx["attempt"] == 1
    assert 0 < ctx["remaining_ms"] <= 3000
    assert len(ctx["aws_request_id"]) == 36


def test_event_matching_no_rule_is_accepted_and_queues_nothing(stack, r):
    stack.write_rules(RULES)
    stack.start_broker()
    status, body = post(stack.url + "/events", {"source": "other", "detail-type": "X", "detail": {}})
    assert status == 200 and "EventId" in body["Entries"][0]
    assert r.xlen(stream_key("default/orders/rec")) == 0


def test_answer_comes_after_the_delivery_is_in_redis(stack, r):
    stack.write_rules(RULES)
    stack.start_broker()  # no worker: the delivery must wait in Redis
    status, body = post(stack.url + "/events", ORDER)
    assert status == 200
    entries = r.xrange(stream_key("default/orders/rec"))
    assert len(entries) == 1
    assert json.loads(entries[0][1][b"d"])["event"]["id"] == body["Entries"][0]["EventId"]


def test_unknown_bus_is_an_entry_error_and_queues_nothing(stack, r, events_client):
    stack.write_rules(RULES)
    stack.start_broker()
    resp = events_client(stack.url).put_events(Entries=[
        {"Source": "shop.orders", "DetailType": "OrderPlaced", "Detail": "{}", "EventBusName": "nope"},
        {"Source": "shop.orders", "DetailType": "OrderPlaced", "Detail": "{}"},
    ])
    assert resp["FailedEntryCount"] == 1
    assert resp["Entries"][0]["ErrorCode"] == "ResourceNotFoundException"
    assert "nope" in resp["Entries"][0]["ErrorMessage"]
    assert "EventId" in resp["Entries"][1]
    assert r.xlen(stream_key("default/orders/rec")) == 1


def test_malformed_detail_is_an_entry_error(stack, events_client):
    stack.write_rules(RULES)
    stack.start_broker()
    resp = events_client(stack.url).put_events(Entries=[
        {"Source": "shop.orders", "DetailType": "OrderPlaced", "Detail": "{not json"},
        {"Source": "shop.orders", "DetailType": "OrderPlaced", "Detail": "[1, 2]"},
    ])
    assert [e["ErrorCode"] for e in resp["Entries"]] == ["MalformedDetail", "MalformedDetail"]


def test_an_empty_detail_is_invalid_argument_as_a_missing_one_is(stack, events_client):
    stack.write_rules(RULES)
    stack.start_broker()
    resp = events_client(stack.url).put_events(Entries=[
        {"Source": "shop.orders", "DetailType": "OrderPlaced", "Detail": ""}])
    [entry] = resp["Entries"]
    assert (entry["ErrorCode"], entry["ErrorMessage"]) == (
        "InvalidArgument", "Parameter Detail is not valid. Reason: Detail is a required argument.")


def test_missing_source_is_invalid_argument(stack):
    stack.write_rules(RULES)
    stack.start_broker()
    status, body = aws(stack.url, "PutEvents", {"Entries": [{"DetailType": "X", "Detail": "{}"}]})
    assert status == 200
    assert body["Entries"][0]["ErrorCode"] == "InvalidArgument"
    assert "Source" in body["Entries"][0]["ErrorMessage"]


def test_malformed_json_body_is_a_serialization_exception(stack):
    stack.write_rules(RULES)
    stack.start_broker()
    for url, headers in [(stack.url + "/events", {}),
                         (stack.url + "/", {"X-Amz-Target": "AWSEvents.PutEvents"})]:
        status, body = post(url, b'{"source": "x", ', headers)
        assert status == 400
        assert body["__type"] == "SerializationException"


def test_eleven_entries_is_a_validation_exception(stack, events_client, r):
    stack.write_rules(RULES)
    stack.start_broker()
    entry = {"Source": "shop.orders", "DetailType": "OrderPlaced", "Detail": "{}"}
    with pytest.raises(ClientError) as err:
        events_client(stack.url).put_events(Entries=[entry] * 11)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "10" in err.value.response["Error"]["Message"]
    assert r.xlen(stream_key("default/orders/rec")) == 0


def test_oversize_request_is_a_validation_exception(stack, events_client):
    stack.write_rules(RULES)
    stack.start_broker()
    big = json.dumps({"blob": "x" * (1024 * 1024)})
    with pytest.raises(ClientError) as err:
        events_client(stack.url).put_events(Entries=[{"Source": "s", "DetailType": "d", "Detail": big}])
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "over the limit" in err.value.response["Error"]["Message"]


def test_unknown_operation_has_aws_error_shape(stack):
    stack.write_rules(RULES)
    stack.start_broker()
    status, body = aws(stack.url, "FlyToTheMoon", {})
    assert status == 400 and body["__type"] == "UnknownOperationException"


def test_broker_metrics_count_ingested_matched_and_rejected(running):
    post(running.url + "/events", [ORDER, {"source": "x", "detail-type": "y", "detail": "oops"}])
    text = get_text(running.url + "/metrics")
    assert metric(text, "busway_events_ingested_total", bus="default") == 1
    assert metric(text, "busway_rule_matches_total", bus="default", rule="orders") == 1
    assert metric(text, "busway_events_rejected_total", bus="default", error_code="MalformedDetail") == 1
