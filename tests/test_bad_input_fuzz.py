"""Property: no request body, however wrong, makes a broker answer 5xx.

Random JSON (and some raw bytes) goes to every AWS operation and to the native routes of ONE
broker. Bodies mix the members each operation reads, with plausible and random values, so the
checks past the first one are reached too. Bounded: a few hundred requests, well under a minute.
"""
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Stack

OPERATIONS = ["PutEvents", "TestEventPattern", "ListEventBuses", "DescribeEventBus", "ListRules", "DescribeRule",
              "ListTargetsByRule", "PutRule", "PutTargets", "RemoveTargets", "EnableRule", "DisableRule",
              "DeleteRule", "ListRuleNamesByTarget", "CreateEventBus", "UpdateEventBus", "DeleteEventBus",
              "CreateConnection", "DescribeConnection", "ListConnections", "UpdateConnection", "DeleteConnection",
              "DeauthorizeConnection", "CreateApiDestination", "DescribeApiDestination", "ListApiDestinations",
              "UpdateApiDestination", "DeleteApiDestination", "CreateArchive", "DescribeArchive", "ListArchives",
              "UpdateArchive", "DeleteArchive", "StartReplay", "DescribeReplay", "ListReplays", "CancelReplay",
              "TagResource", "UntagResource", "ListTagsForResource", "PutPermission", "RemovePermission",
              "NoSuchOperation"]
MEMBERS = ["Name", "EventBusName", "NamePrefix", "NextToken", "Limit", "Rule", "Targets", "Ids", "Force",
           "Description", "State", "EventPattern", "ScheduleExpression", "Entries", "Event", "RoleArn",
           "TargetArn", "Tags", "AuthorizationType", "AuthParameters", "ConnectionArn", "InvocationEndpoint",
           "HttpMethod", "InvocationRateLimitPerSecond", "ArchiveName", "EventSourceArn", "RetentionDays",
           "ReplayName", "EventStartTime", "EventEndTime", "Destination", "ResourceARN", "TagKeys", "Action",
           "Principal", "StatementId", "Condition", "Policy", "RemoveAllPermissions"]
TARGET_MEMBERS = ["Id", "Arn", "RetryPolicy", "DeadLetterConfig", "Input", "InputPath", "InputTransformer",
                  "HttpParameters", "RoleArn"]
NESTED_MEMBERS = ["MaximumRetryAttempts", "MaximumEventAgeInSeconds", "Arn", "InputPathsMap", "InputTemplate",
                  "PathParameterValues", "HeaderParameters", "QueryStringParameters", "ApiKeyAuthParameters",
                  "BasicAuthParameters", "OAuthParameters", "InvocationHttpParameters", "ApiKeyName", "ApiKeyValue",
                  "Username", "Password", "ClientParameters", "ClientID", "ClientSecret", "AuthorizationEndpoint",
                  "FilterArns", "Key", "Value", "Type"]
ENTRY_MEMBERS = ["Source", "DetailType", "Detail", "Resources", "Time", "EventBusName", "TraceHeader"]
NATIVE_MEMBERS = ["source", "detail-type", "detail", "resources", "time", "bus", "pattern", "event", "target", "ids"]

YAML = """
buses: [{name: shop}]
functions:
  probe.record: {}
queues:
  - {name: declared}
rules:
  - {name: from-yaml, event_pattern: {source: [x]}, targets: [{id: t, function: probe.record}]}
"""

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20))
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                           max_leaves=12)
plausible = st.sampled_from([
    "r", "from-yaml", "default", "shop", "nope", "0", "5", "-1", "ENABLED", "DISABLED", "rate(1 minute)",
    "cron(0 12 * * ? *)", '{"source": ["x"]}', '{"source": "x"}', "{not json", "[" * 200 + "]" * 200,
    "probe.record", "arn:aws:lambda:us-east-1:000000000000:function:probe.record", "arn:aws:sqs:us-east-1:0:q",
    '{"id": "1", "source": "x", "detail-type": "t", "account": "1", "region": "r", "time": "2024-01-01T00:00:00Z"}',
    "arn:aws:events:us-east-1:000000000000:event-bus/shop", "arn:aws:events:us-east-1:0:api-destination/d/1",
    "arn:aws:events:us-east-1:000000000000:archive/a", "arn:aws:events:us-east-1:000000000000:rule/from-yaml",
    "events:PutEvents", "*", "123456789012", 1700000000, "a",
    "arn:aws:events:us-east-1:0:connection/c/1", "API_KEY", "BASIC", "OAUTH_CLIENT_CREDENTIALS", "https://x/y/*",
    "http://127.0.0.1:9/", "POST", "CONNECT", "$.detail", "$..x", '{"a": <x>}', "<aws.events.event>",
    "2024-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00", 0, 1, 100, 101, 186, 1e308, -1e18, 2**64, 10**400, True, [], {},
])
values = st.one_of(plausible, json_values)


def objects(keys: list[str], value=values) -> st.SearchStrategy:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), value, max_size=6)


nested = objects(NESTED_MEMBERS, st.one_of(values, objects(NESTED_MEMBERS)))
targets = st.lists(st.one_of(objects(TARGET_MEMBERS, st.one_of(values, nested)), values), max_size=3)
entries = st.lists(st.one_of(objects(ENTRY_MEMBERS), values), max_size=3)
aws_bodies = st.one_of(
    st.dictionaries(st.sampled_from(MEMBERS), st.one_of(values, nested), max_size=6),
    st.fixed_dictionaries({"Rule": st.sampled_from(["r", "from-yaml"]), "Targets": targets}),
    st.fixed_dictionaries({"Entries": entries}),
    json_values,
)


@pytest.fixture(scope="module")
def broker(redis_server, tmp_path_factory):
    import redis as redis_lib
    redis_lib.Redis.from_url(redis_server.url).flushall()
    stack = Stack(redis_server.url, tmp_path_factory.mktemp("fuzz"))
    stack.env["BUS_SECRETS_KEY"] = "nKeW4hW3mS1f1b9rXo0K8zq2Jt7m0Qb6h1s3o2tQy5U="  # connections can be created
    stack.write_rules(YAML)
    stack.start_broker()
    status, _ = send(stack.url + "/", json.dumps({"Name": "r", "EventPattern": '{"source": ["x"]}'}).encode(),
                     {"X-Amz-Target": "AWSEvents.PutRule"})
    assert status == 200
    yield stack
    stack.stop()


def send(url: str, body: bytes | None, headers: dict | None = None) -> tuple[int, str]:
    """Status and body text, whatever the answer (a 500's body need not be JSON)."""
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def encode(body) -> bytes:
    return json.dumps(body).encode()


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(operation=st.sampled_from(OPERATIONS), body=st.one_of(aws_bodies.map(encode), st.binary(max_size=40)))
def test_no_aws_operation_answers_5xx_for_any_body(broker, operation, body):
    status, text = send(broker.url + "/", body, {"X-Amz-Target": f"AWSEvents.{operation}",
                                                 "Content-Type": "application/x-amz-json-1.1"})
    assert status < 500, (operation, body, text)
    assert "__type" in json.loads(text) if status >= 400 else True


RESOURCE_OPERATIONS = [op for op in OPERATIONS if "Connection" in op or "ApiDestination" in op or "EventBus" in op]
auth_parameters = st.fixed_dictionaries({}, optional={
    "ApiKeyAuthParameters": objects(["ApiKeyName", "ApiKeyValue"]),
    "BasicAuthParameters": objects(["Username", "Password"]),
    "OAuthParameters": objects(["ClientParameters", "AuthorizationEndpoint", "HttpMethod", "OAuthHttpParameters"],
                               st.one_of(values, objects(["ClientID", "ClientSecret"]))),
    "InvocationHttpParameters": objects(["HeaderParameters", "QueryStringParameters", "BodyParameters"],
                                        st.one_of(values, st.lists(objects(["Key", "Value", "IsValueSecret"]), max_size=2))),
})
resource_bodies = st.fixed_dictionaries({"Name": st.sampled_from(["c", "d", "shop", "default", "nope", "", "x" * 70])}, optional={
    "AuthorizationType": st.sampled_from(["API_KEY", "BASIC", "OAUTH_CLIENT_CREDENTIALS", "NONE", 5]),
    "AuthParameters": st.one_of(auth_parameters, values), "ConnectionArn": values, "InvocationEndpoint": values,
    "HttpMethod": values, "InvocationRateLimitPerSecond": values, "Description": values, "Tags": values,
})


@FUZZ
@given(operation=st.sampled_from(RESOURCE_OPERATIONS), body=resource_bodies.map(encode))
def test_no_connection_destination_or_bus_operation_answers_5xx(broker, operation, body):
    status, text = send(broker.url + "/", body, {"X-Amz-Target": f"AWSEvents.{operation}",
                                                 "Content-Type": "application/x-amz-json-1.1"})
    assert status < 500, (operation, body, text)
    assert "__type" in json.loads(text) if status >= 400 else True


native_bodies = st.one_of(objects(NATIVE_MEMBERS).map(encode), st.lists(objects(NATIVE_MEMBERS), max_size=3).map(encode),
                          json_values.map(encode), st.binary(max_size=40))


@FUZZ
@given(path=st.sampled_from(["/events", "/test-event-pattern", "/dlq/redrive", "/dlq/purge", "/cloudevents",
                             "/cloudevents/default"]), body=native_bodies)
def test_no_native_route_answers_5xx_for_any_body(broker, path, body):
    status, text = send(broker.url + path, body, {"Content-Type": "application/json"})
    assert status < 500, (path, body, text)


@settings(max_examples=50, deadline=None)
@given(target=st.text(max_size=10), ids=st.text(max_size=10), letter=st.text(min_size=1, max_size=10))
def test_no_dlq_read_answers_5xx_for_any_query(broker, target, ids, letter):
    query = urllib.parse.urlencode({"target": target, "ids": ids})
    for url in (f"{broker.url}/dlq?{query}", f"{broker.url}/dlq/{urllib.parse.quote(letter, safe='')}"):
        status, text = send(url, None)
        assert status < 500, (url, text)


SQS_OPERATIONS = ["CreateQueue", "GetQueueUrl", "ListQueues", "DeleteQueue", "PurgeQueue", "GetQueueAttributes",
                  "SetQueueAttributes", "SendMessage", "SendMessageBatch", "ReceiveMessage", "DeleteMessage",
                  "DeleteMessageBatch", "ChangeMessageVisibility", "ChangeMessageVisibilityBatch", "NoSuchAction"]
SQS_MEMBERS = ["QueueName", "QueueUrl", "Attributes", "AttributeNames", "MessageAttributeNames",
               "MessageSystemAttributeNames", "MessageBody", "DelaySeconds", "MessageAttributes", "Entries",
               "MaxNumberOfMessages", "WaitTimeSeconds", "VisibilityTimeout", "ReceiptHandle", "QueueNamePrefix",
               "MaxResults", "NextToken", "MessageSystemAttributes", "Id"]
sqs_plausible = st.sampled_from(["q", "declared", "http://x/000000000000/q", "http://x/0/declared", "/nope", "",
                                 "All", ["All"], ["VisibilityTimeout"], {"VisibilityTimeout": "5"},
                                 {"RedrivePolicy": '{"deadLetterTargetArn": "arn:aws:sqs:r:0:declared", "maxReceiveCount": 2}'},
                                 {"RedrivePolicy": "{"}, {"FifoQueue": "true"}, "m" * 3, 0, 1, 10, 11, 21, 900, -1,
                                 {"k": {"DataType": "String", "StringValue": "v"}}, {"k": 5}, "a.b", "x" * 36 + ".0123456789abcdef"])
sqs_values = st.one_of(sqs_plausible, json_values)
sqs_entries = st.lists(st.one_of(objects(SQS_MEMBERS, sqs_values), sqs_values), max_size=3)
sqs_bodies = st.one_of(
    st.dictionaries(st.sampled_from(SQS_MEMBERS), st.one_of(sqs_values, sqs_entries), max_size=6),
    st.fixed_dictionaries({"QueueUrl": st.sampled_from(["http://x/0/q", "http://x/0/declared"]),
                           "Entries": sqs_entries}),
    st.fixed_dictionaries({"QueueUrl": st.sampled_from(["http://x/0/q", "http://x/0/declared"])},
                          optional={k: sqs_values for k in SQS_MEMBERS if k != "QueueUrl"}),
    json_values,
)


@FUZZ
@given(operation=st.sampled_from(SQS_OPERATIONS), body=st.one_of(sqs_bodies.map(encode), st.binary(max_size=40)))
def test_no_sqs_operation_answers_5xx_for_any_body(broker, operation, body):
    send(broker.url + "/", encode({"QueueName": "q"}), {"X-Amz-Target": "AmazonSQS.CreateQueue",
                                                        "Content-Type": "application/x-amz-json-1.0"})
    status, text = send(broker.url + "/", body, {"X-Amz-Target": f"AmazonSQS.{operation}",
                                                 "Content-Type": "application/x-amz-json-1.0"})
    assert status < 500, (operation, body, text)
    assert "__type" in json.loads(text) if status >= 400 else True


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(["probe.record", "nope", "arn:aws:lambda:r:0:function:probe.record", "a:b:c:d", "%00"])
       | st.text(max_size=12),
       kind=st.sampled_from(["Event", "DryRun", "Bogus", ""]), log=st.sampled_from(["None", "Tail", "x"]),
       context=st.sampled_from(["", "e30=", "!!", "W10="]), body=st.one_of(json_values.map(encode), st.binary(max_size=40)))
def test_no_lambda_route_answers_5xx(broker, name, kind, log, context, body):
    quoted = urllib.parse.quote(name, safe="") or "x"
    headers = {"X-Amz-Log-Type": log, **({"X-Amz-Invocation-Type": kind} if kind else {"X-Amz-Invocation-Type": "Event"}),
               **({"X-Amz-Client-Context": context} if context else {})}
    for url, data in ((f"{broker.url}/2015-03-31/functions/{quoted}/invocations", body),
                      (f"{broker.url}/2015-03-31/functions/{quoted}", None),
                      (f"{broker.url}/2015-03-31/functions/{quoted}/configuration", None),
                      (f"{broker.url}/2015-03-31/functions/?MaxItems={quoted}&Marker={quoted}", None)):
        status, text = send(url, data, headers)
        assert status < 500, (url, data, text)
