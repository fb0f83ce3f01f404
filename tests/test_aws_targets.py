"""Targets of every kind through the AWS API, as boto3 calls it: PutTargets, ListTargetsByRule,
ListRuleNamesByTarget, and what PutRule / DeleteRule / PutEvents answer as AWS does."""
import json

import msgspec
import pytest
from botocore.exceptions import ClientError

from bus.config.model import BusTarget, FunctionTarget, HttpTarget
from bus.config.rulesfile import load_config
from bus.store.apirules import decode_rule
from bus.store.keys import API_RULES, api_rule_field
from tests.httpc import aws

YAML = """
connections:
  - name: crm
    authorization:
      api_key: {header: x-api-key, value_from_env: CRM_KEY}
api_destinations:
  - name: crm-orders
    connection: crm
    endpoint: http://127.0.0.1:9/orders/*
buses:
  - {name: shop}
rules:
  - name: from-yaml
    event_pattern: {source: [yaml]}
    targets: [{id: t, function: probe.record}, {id: b, bus: shop}]
"""

REGION, ACCOUNT = "us-east-1", "000000000000"
LAMBDA = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:probe.record"
SHOP_BUS = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/shop"
PATTERN = '{"source": ["x"]}'


@pytest.fixture
def client(stack, events_client):
    stack.write_rules(YAML)
    stack.start_broker()
    client = events_client(stack.url)
    client.put_rule(Name="r", EventPattern=PATTERN)
    return client


@pytest.fixture
def destination_arn(stack) -> str:
    """crm-orders' ARN with its id, as YAML gives it."""
    uuid = load_config(stack.rules_dir).api_destinations["crm-orders"].uuid
    return f"arn:aws:events:{REGION}:{ACCOUNT}:api-destination/crm-orders/{uuid}"


def stored_targets(r, rule: str = "r"):
    return decode_rule(r.hget(API_RULES, api_rule_field("default", rule))).targets


def error_of(call) -> dict:
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]


# --- PutTargets / ListTargetsByRule ---------------------------------------------------------

def test_every_member_of_every_kind_round_trips_through_put_targets_and_list_targets_by_rule(client, destination_arn):
    dlq = f"arn:aws:sqs:{REGION}:{ACCOUNT}:my-dlq"
    sent = [
        {"Id": "fn", "Arn": LAMBDA, "RoleArn": "arn:aws:iam::000000000000:role/r", "Input": '{"constant": true}',
         "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 600}, "DeadLetterConfig": {"Arn": dlq}},
        {"Id": "bus", "Arn": SHOP_BUS, "InputPath": "$.detail.order",
         "RetryPolicy": {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}},
        {"Id": "http", "Arn": destination_arn,
         "InputTransformer": {"InputPathsMap": {"id": "$.detail.id"}, "InputTemplate": '{"order": <id>}'},
         "HttpParameters": {"PathParameterValues": ["v1"], "HeaderParameters": {"x-tenant": "t1"},
                            "QueryStringParameters": {"q": "1"}},
         "RetryPolicy": {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}},
        {"Id": "template-only", "Arn": LAMBDA, "InputTransformer": {"InputTemplate": '"constant text"'},
         "RetryPolicy": {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}},
    ]
    assert client.put_targets(Rule="r", Targets=sent)["FailedEntryCount"] == 0
    assert client.list_targets_by_rule(Rule="r")["Targets"] == sent


def test_each_arn_kind_makes_its_target_kind(client, r, destination_arn):
    client.put_targets(Rule="r", Targets=[{"Id": "fn", "Arn": LAMBDA}, {"Id": "bus", "Arn": SHOP_BUS},
                                          {"Id": "http", "Arn": destination_arn}])
    fn, bus, http = stored_targets(r)
    assert isinstance(fn, FunctionTarget) and fn.function == "probe.record"
    assert isinstance(bus, BusTarget) and bus.bus == "shop"
    assert isinstance(http, HttpTarget) and http.http == "crm-orders"


def test_an_api_destination_target_lists_the_destinations_own_id(client, destination_arn):
    other_id = destination_arn.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    client.put_targets(Rule="r", Targets=[{"Id": "http", "Arn": other_id}])
    [target] = client.list_targets_by_rule(Rule="r")["Targets"]
    assert target["Arn"] == destination_arn


def test_yaml_targets_of_every_kind_are_listed_with_their_arn(client):
    arns = [t["Arn"] for t in client.list_targets_by_rule(Rule="from-yaml")["Targets"]]
    assert arns == [LAMBDA, SHOP_BUS]


def test_a_target_that_is_not_an_arn_fails_the_whole_request(client):
    error = error_of(lambda: client.put_targets(Rule="r", Targets=[{"Id": "good", "Arn": LAMBDA},
                                                                   {"Id": "bad", "Arn": "not-an-arn"}]))
    assert error == {"Code": "ValidationException",
                     "Message": "Parameter not-an-arn is not valid. Reason: Provided Arn is not in correct format."}
    assert client.list_targets_by_rule(Rule="r")["Targets"] == []


@pytest.mark.parametrize("arn", ["arn:aws:lambda", "arn:aws:lambda:us-east-1:1", "arn::sqs:r:a:q"])
def test_an_arn_missing_its_parts_fails_the_whole_request(client, arn):
    error = error_of(lambda: client.put_targets(Rule="r", Targets=[{"Id": "bad", "Arn": arn}]))
    assert error["Message"] == f"Parameter {arn} is not valid. Reason: Provided Arn is not in correct format."


@pytest.mark.parametrize("service, arn", [
    ("sns", "arn:aws:sns:us-east-1:000000000000:topic"),
    ("kinesis", "arn:aws:kinesis:us-east-1:000000000000:stream/s"),
    ("states", "arn:aws:states:us-east-1:000000000000:stateMachine:m"),
    ("events rule", "arn:aws:events:us-east-1:000000000000:rule/other"),
])
def test_an_arn_of_a_service_busway_does_not_run_fails_its_entry_naming_it(client, service, arn):
    resp = client.put_targets(Rule="r", Targets=[{"Id": "bad", "Arn": arn}, {"Id": "good", "Arn": LAMBDA}])
    [failed] = resp["FailedEntries"]
    assert (failed["TargetId"], failed["ErrorCode"]) == ("bad", "ValidationException")
    assert f"Target bad: {service} is not a target kind busway delivers to" in failed["ErrorMessage"]
    assert [t["Id"] for t in client.list_targets_by_rule(Rule="r")["Targets"]] == ["good"]


def test_an_sqs_arn_is_a_queue_target_listed_back_with_its_arn(client):
    arn = "arn:aws:sqs:us-east-1:000000000000:orders-in"
    assert client.put_targets(Rule="r", Targets=[{"Id": "q", "Arn": arn}])["FailedEntryCount"] == 0
    [target] = client.list_targets_by_rule(Rule="r")["Targets"]
    assert target["Arn"] == arn
    assert client.list_rule_names_by_target(TargetArn=arn)["RuleNames"] == ["r"]


def test_a_lambda_arn_that_names_no_function_fails_its_entry(client):
    resp = client.put_targets(Rule="r", Targets=[{"Id": "t", "Arn": "arn:aws:lambda:us-east-1:1:layer:x:1"}])
    assert "Arn must name a function" in resp["FailedEntries"][0]["ErrorMessage"]


def test_an_api_destination_that_does_not_exist_fails_its_entry(client):
    arn = f"arn:aws:events:{REGION}:{ACCOUNT}:api-destination/nope/1234"
    [failed] = client.put_targets(Rule="r", Targets=[{"Id": "t", "Arn": arn}])["FailedEntries"]
    assert failed["ErrorCode"] == "ResourceNotFoundException" and "'nope'" in failed["ErrorMessage"]


def test_an_event_bus_that_does_not_exist_fails_its_entry(client):
    arn = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/nowhere"
    [failed] = client.put_targets(Rule="r", Targets=[{"Id": "t", "Arn": arn}])["FailedEntries"]
    assert failed["ErrorCode"] == "ResourceNotFoundException" and "'nowhere'" in failed["ErrorMessage"]


def test_http_parameters_on_a_function_target_fail_the_entry(client):
    [failed] = client.put_targets(Rule="r", Targets=[
        {"Id": "t", "Arn": LAMBDA, "HttpParameters": {"HeaderParameters": {"a": "b"}}}])["FailedEntries"]
    assert failed["ErrorMessage"] == "Target t: HttpParameters apply only to API destination targets."


@pytest.mark.parametrize("parameters", [{"HeaderParameters": {"x-a": "one\r\nx-injected: two"}},
                                        {"HeaderParameters": {"bad header": "v"}},
                                        {"QueryStringParameters": {"q": "a\x01b"}},
                                        {"PathParameterValues": ["  "]}])
def test_http_parameters_outside_awss_patterns_fail_the_entry(client, destination_arn, parameters):
    [failed] = client.put_targets(Rule="r", Targets=[
        {"Id": "t", "Arn": destination_arn, "HttpParameters": parameters}])["FailedEntries"]
    assert failed["ErrorCode"] == "ValidationException" and "HttpParameters" in failed["ErrorMessage"]


def test_input_that_is_not_json_fails_its_entry(client):
    pytest.importorskip("bus.transform")  # the input checks live there
    [failed] = client.put_targets(Rule="r", Targets=[{"Id": "t", "Arn": LAMBDA, "Input": "{not json"}])["FailedEntries"]
    assert failed == {"TargetId": "t", "ErrorCode": "ValidationException",
                      "ErrorMessage": "Input for target t is not a valid JSON text."}


def test_an_input_over_8192_characters_fails_its_entry_saying_so(client):
    pytest.importorskip("bus.transform")
    [failed] = client.put_targets(Rule="r", Targets=[
        {"Id": "t", "Arn": LAMBDA, "Input": json.dumps("x" * 8200)}])["FailedEntries"]
    assert failed["ErrorMessage"].startswith("Target t: Input: at most 8192 characters")


def test_a_template_placeholder_without_a_path_fails_its_entry_in_awss_words(client):
    pytest.importorskip("bus.transform")
    [failed] = client.put_targets(Rule="r", Targets=[
        {"Id": "t", "Arn": LAMBDA, "InputTransformer": {"InputTemplate": '{"a": <nope>}'}}])["FailedEntries"]
    assert failed["ErrorMessage"] == "InputTemplate for target t contains invalid placeholder nope."


def test_two_input_options_on_one_target_fail_its_entry(client):
    pytest.importorskip("bus.transform")
    [failed] = client.put_targets(Rule="r", Targets=[
        {"Id": "t", "Arn": LAMBDA, "Input": "{}", "InputPath": "$.detail"}])["FailedEntries"]
    assert failed["ErrorCode"] == "ValidationException"


def test_a_target_without_an_arn_fails_the_whole_request(client, stack):
    status, answer = aws(stack.url, "PutTargets", {"Rule": "r", "Targets": [{"Id": "t"}]})
    assert (status, answer["__type"]) == (400, "ValidationException")
    assert "'targets.1.member.arn'" in answer["message"]


def test_an_input_transformer_without_a_template_fails_the_whole_request(client, stack):
    status, answer = aws(stack.url, "PutTargets", {"Rule": "r", "Targets": [
        {"Id": "t", "Arn": LAMBDA, "InputTransformer": {"InputPathsMap": {"a": "$.a"}}}]})
    assert (status, answer["__type"]) == (400, "ValidationException")
    assert "inputTransformer.inputTemplate" in answer["message"]


def test_a_malformed_arn_fails_before_an_unknown_rule_is_looked_up(client):
    error = error_of(lambda: client.put_targets(Rule="nope", Targets=[{"Id": "t", "Arn": "x"}]))
    assert error["Code"] == "ValidationException"


# --- ListRuleNamesByTarget --------------------------------------------------------------------

def test_list_rule_names_by_target_finds_the_rules_of_every_kind(client, destination_arn):
    client.put_rule(Name="also", EventPattern=PATTERN)
    client.put_targets(Rule="r", Targets=[{"Id": "fn", "Arn": LAMBDA}, {"Id": "http", "Arn": destination_arn}])
    client.put_targets(Rule="also", Targets=[{"Id": "bus", "Arn": SHOP_BUS}])
    other_region = "arn:aws:lambda:eu-west-1:123456789012:function:probe.record"
    assert client.list_rule_names_by_target(TargetArn=other_region)["RuleNames"] == ["from-yaml", "r"]
    assert client.list_rule_names_by_target(TargetArn=SHOP_BUS)["RuleNames"] == ["also", "from-yaml"]
    assert client.list_rule_names_by_target(TargetArn=destination_arn)["RuleNames"] == ["r"]
    assert client.list_rule_names_by_target(TargetArn="arn:aws:sqs:us-east-1:1:q")["RuleNames"] == []


def test_list_rule_names_by_target_is_per_bus(client):
    client.put_rule(Name="on-shop", EventBusName="shop", EventPattern=PATTERN)
    client.put_targets(Rule="on-shop", EventBusName="shop", Targets=[{"Id": "fn", "Arn": LAMBDA}])
    assert client.list_rule_names_by_target(TargetArn=LAMBDA, EventBusName="shop")["RuleNames"] == ["on-shop"]
    assert client.list_rule_names_by_target(TargetArn=LAMBDA, EventBusName=SHOP_BUS)["RuleNames"] == ["on-shop"]


def test_list_rule_names_by_target_pages(client):
    for name in ("a", "b", "c"):
        client.put_rule(Name=name, EventPattern=PATTERN)
        client.put_targets(Rule=name, Targets=[{"Id": "fn", "Arn": LAMBDA}])
    first = client.list_rule_names_by_target(TargetArn=LAMBDA, Limit=2)
    second = client.list_rule_names_by_target(TargetArn=LAMBDA, Limit=2, NextToken=first["NextToken"])
    assert first["RuleNames"] + second["RuleNames"] == ["a", "b", "c", "from-yaml"]
    assert "NextToken" not in second
    pages = client.get_paginator("list_rule_names_by_target").paginate(TargetArn=LAMBDA, PaginationConfig={"PageSize": 1})
    assert [n for page in pages for n in page["RuleNames"]] == ["a", "b", "c", "from-yaml"]


def test_list_rule_names_by_target_on_an_unknown_bus_is_resource_not_found(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException) as err:
        client.list_rule_names_by_target(TargetArn=LAMBDA, EventBusName="nowhere")
    assert "Event bus nowhere does not exist." in str(err.value)


def test_list_rule_names_by_target_without_a_target_arn_is_a_validation_exception(client, stack):
    status, answer = aws(stack.url, "ListRuleNamesByTarget", {})
    assert (status, answer["__type"]) == (400, "ValidationException")


# --- PutRule, DeleteRule ---------------------------------------------------------------------

def test_put_rule_with_a_pattern_and_a_schedule_is_accepted_and_described_with_both(client):
    client.put_rule(Name="both", EventPattern=PATTERN, ScheduleExpression="rate(5 minutes)")
    described = client.describe_rule(Name="both")
    assert (json.loads(described["EventPattern"]), described["ScheduleExpression"]) == ({"source": ["x"]}, "rate(5 minutes)")


def test_put_rule_keeps_and_describes_its_role_arn_and_a_later_put_rule_replaces_it(client):
    role = "arn:aws:iam::000000000000:role/events"
    client.put_rule(Name="roled", EventPattern=PATTERN, RoleArn=role)
    assert client.describe_rule(Name="roled")["RoleArn"] == role
    assert [x.get("RoleArn") for x in client.list_rules(NamePrefix="roled")["Rules"]] == [role]
    client.put_rule(Name="roled", EventPattern=PATTERN)  # AWS: an omitted member is replaced by null
    assert "RoleArn" not in client.describe_rule(Name="roled")


def test_put_rule_keeps_its_tags_from_creation_and_an_update_ignores_new_ones(client, r):
    client.put_rule(Name="tagged", EventPattern=PATTERN, Tags=[{"Key": "team", "Value": "shop"}])
    client.put_rule(Name="tagged", EventPattern=PATTERN, Tags=[{"Key": "team", "Value": "other"}])
    stored = decode_rule(r.hget(API_RULES, api_rule_field("default", "tagged")))
    assert stored.tags == {"team": "shop"}
    assert "Tags" not in client.describe_rule(Name="tagged")  # AWS: ListTagsForResource shows them


def test_put_rule_with_a_tag_key_twice_is_a_validation_exception(client):
    error = error_of(lambda: client.put_rule(Name="twice", EventPattern=PATTERN,
                                             Tags=[{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]))
    assert error["Code"] == "ValidationException"


def test_delete_rule_of_a_rule_that_does_not_exist_succeeds(client):
    client.delete_rule(Name="never-there")
    client.delete_rule(Name="r")
    client.delete_rule(Name="r")  # AWS: a repeated delete succeeds too
    assert [x["Name"] for x in client.list_rules()["Rules"]] == ["from-yaml"]


def test_delete_rule_on_a_bus_that_does_not_exist_is_resource_not_found(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.delete_rule(Name="r", EventBusName="nowhere")


def test_stored_targets_keep_their_input_options_as_the_model_has_them(client, r, destination_arn):
    client.put_targets(Rule="r", Targets=[{"Id": "http", "Arn": destination_arn, "RoleArn": "role",
                                           "InputTransformer": {"InputPathsMap": {"id": "$.id"}, "InputTemplate": "<id>"},
                                           "HttpParameters": {"HeaderParameters": {"x-a": "b"}}}])
    [target] = stored_targets(r)
    assert msgspec.to_builtins(target)["input_transformer"] == {"input_template": "<id>", "input_paths_map": {"id": "$.id"}}
    assert target.http_parameters.header_parameters == {"x-a": "b"} and target.role_arn == "role"


# --- pure: the ARN shown for an API destination target -----------------------------------------

def test_an_http_target_arn_carries_its_destinations_id_and_a_stable_one_when_it_is_unknown():
    from bus.broker.awstargets import target_arn
    from bus.config.model import ApiDestination
    from bus.identity import Identity
    who, target = Identity(ACCOUNT, "eu-west-1"), HttpTarget(id="t", http="d")
    known = {"d": ApiDestination(name="d", connection="c", endpoint="http://x", uuid="abc")}
    assert target_arn(target, who, known) == f"arn:aws:events:eu-west-1:{ACCOUNT}:api-destination/d/abc"
    unknown = target_arn(target, who, {})
    assert unknown == target_arn(target, who, {}) and unknown.rsplit("/", 1)[1] not in ("", "abc")


def test_arn_parsers_take_any_partition_region_and_account():
    from bus import identity
    assert identity.parse_arn("arn:aws-cn:sqs:cn-north-1:123:q").service == "sqs"
    assert identity.parse_arn("arn:aws:iam::123:role/r").resource == "role/r"
    assert identity.parse_arn("arn:aws:sqs:r:a") is None and identity.parse_arn("probe.record") is None
    assert identity.api_destination_name("arn:aws-us-gov:events:r:1:api-destination/crm/abc") == "crm"
    assert identity.api_destination_name("arn:aws:events:r:1:event-bus/crm") is None


def test_two_input_options_on_one_target_fail_that_entry_in_aws_words(client):
    answer = client.put_targets(Rule="r", Targets=[{"Id": "t", "Arn": LAMBDA, "Input": "{}", "InputPath": "$.detail"}])
    assert answer["FailedEntries"] == [{"TargetId": "t", "ErrorCode": "ValidationException", "ErrorMessage":
                                        "Only one of Input, InputPath, or InputTransformer must be provided for target t."}]
