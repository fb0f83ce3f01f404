"""Bad input is the client's fault: each case answers 400 with an AWS-shaped error, never a 500.

One broker serves every case (none changes what a later case reads); each case is one request.
A stored rule that does not load is tested in test_aws_rules.py.
"""
import json

import pytest

from bus.broker.envelope import MAX_JSON_DEPTH
from tests.conftest import Stack
from tests.httpc import aws, post

AWS_ERRORS = {"SerializationException", "ValidationException"}
DEEP = "[" * 1000 + "]" * 1000  # past any sane limit: Python's own recursion limit is 1000


def deep_object(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.fixture(scope="module")
def broker(redis_server, tmp_path_factory):
    """One broker with an API rule `r` (so target operations reach their checks)."""
    import redis as redis_lib
    redis_lib.Redis.from_url(redis_server.url).flushall()
    stack = Stack(redis_server.url, tmp_path_factory.mktemp("bad-input"))
    stack.start_broker()
    status, _ = aws(stack.url, "PutRule", {"Name": "r", "EventPattern": '{"source": ["x"]}'})
    assert status == 200
    yield stack
    stack.stop()


# (operation, body) pairs; each must be a whole-request SerializationException or ValidationException.
AWS_CASES = {
    "deep-json-body": ("ListRules", '{"NamePrefix": ' + DEEP + "}"),
    "list-rules-next-token-not-a-number": ("ListRules", {"NextToken": "abc"}),
    "list-rules-limit-zero": ("ListRules", {"Limit": 0}),
    "list-event-buses-name-prefix-number": ("ListEventBuses", {"NamePrefix": 5}),
    "describe-event-bus-name-number": ("DescribeEventBus", {"Name": 5}),
    "describe-rule-name-number": ("DescribeRule", {"Name": 5}),
    "describe-rule-bus-number": ("DescribeRule", {"Name": "r", "EventBusName": 5}),
    "describe-rule-name-list": ("DescribeRule", {"Name": ["a"]}),
    "list-targets-rule-list": ("ListTargetsByRule", {"Rule": ["a"]}),
    "put-targets-target-not-an-object": ("PutTargets", {"Rule": "r", "Targets": [1]}),
    "put-targets-retry-attempts-text": ("PutTargets", {"Rule": "r", "Targets": [
        {"Id": "t", "Arn": "probe.record", "RetryPolicy": {"MaximumRetryAttempts": "5"}}]}),
    "put-targets-dead-letter-arn-number": ("PutTargets", {"Rule": "r", "Targets": [
        {"Id": "t", "Arn": "probe.record", "DeadLetterConfig": {"Arn": 5}}]}),
    "remove-targets-ids-number": ("RemoveTargets", {"Rule": "r", "Ids": 5}),
    "put-rule-description-number": ("PutRule", {"Name": "d", "EventPattern": '{"source": ["x"]}', "Description": 123}),
    "put-rule-pattern-deep": ("PutRule", {"Name": "d", "EventPattern": DEEP}),
    "test-event-pattern-event-deep": ("TestEventPattern", {"EventPattern": '{"source": ["x"]}', "Event": DEEP}),
}


@pytest.mark.parametrize("operation,body", AWS_CASES.values(), ids=AWS_CASES.keys())
def test_bad_aws_input_is_a_400_with_an_aws_error(broker, operation, body):
    status, answer = aws(broker.url, operation, body)
    assert status == 400, answer
    assert set(answer) == {"__type", "message"} and answer["__type"] in AWS_ERRORS | {"InvalidEventPatternException"}


@pytest.mark.parametrize("time", [1e308, -1e18, 10**400], ids=["1e308", "-1e18", "10**400"])
def test_put_events_time_out_of_range_is_an_invalid_argument_entry(broker, time):
    status, answer = aws(broker.url, "PutEvents", {"Entries": [
        {"Source": "s", "DetailType": "t", "Detail": "{}", "Time": time}]})
    assert status == 200, answer
    [entry] = answer["Entries"]
    assert entry["ErrorCode"] == "InvalidArgument" and "Time" in entry["ErrorMessage"]


@pytest.mark.parametrize("time", [1e308, -1e18], ids=["1e308", "-1e18"])
def test_native_time_out_of_range_is_an_invalid_argument_entry(broker, time):
    status, answer = post(broker.url + "/events", {"source": "s", "detail-type": "t", "detail": {}, "time": time})
    assert status == 200, answer
    assert answer["Entries"][0]["ErrorCode"] == "InvalidArgument"


def test_a_deep_detail_is_a_malformed_detail_entry(broker):
    detail = json.dumps(deep_object(MAX_JSON_DEPTH + 1))
    status, answer = aws(broker.url, "PutEvents", {"Entries": [{"Source": "s", "DetailType": "t", "Detail": detail}]})
    assert status == 200, answer
    assert answer["Entries"][0]["ErrorCode"] == "MalformedDetail"


def test_a_detail_at_the_nesting_limit_is_accepted(broker):
    detail = json.dumps(deep_object(MAX_JSON_DEPTH - 1))  # the entry's body adds one level
    status, answer = aws(broker.url, "PutEvents", {"Entries": [{"Source": "s", "DetailType": "t", "Detail": detail}]})
    assert status == 200 and "EventId" in answer["Entries"][0], answer


NATIVE_CASES = {
    "events-deep-json": ("/events", DEEP.encode()),
    "test-event-pattern-deep-json": ("/test-event-pattern", DEEP.encode()),
    "dlq-redrive-malformed-json": ("/dlq/redrive", b"{not json"),
    "dlq-purge-malformed-json": ("/dlq/purge", b"{not json"),
    "dlq-redrive-invalid-utf8": ("/dlq/redrive", b'{"target": "\xff"}'),
    "dlq-purge-deep-json": ("/dlq/purge", DEEP.encode()),
    "dlq-redrive-ids-number": ("/dlq/redrive", b'{"ids": 5}'),
    "dlq-purge-target-number": ("/dlq/purge", b'{"target": 5}'),
}


@pytest.mark.parametrize("path,body", NATIVE_CASES.values(), ids=NATIVE_CASES.keys())
def test_bad_native_input_is_a_400_with_the_native_error_shape(broker, path, body):
    status, answer = post(broker.url + path, body, {"Content-Type": "application/json"})
    assert status == 400, answer
    assert set(answer) == {"__type", "message"} and answer["__type"] in AWS_ERRORS
