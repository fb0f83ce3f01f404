"""Rules and buses through the AWS API, as boto3 and the aws CLI call them."""
import json

import pytest
from botocore.exceptions import ClientError

from bus.store.keys import API_RULES, API_VERSION, api_rule_field, stream_key
from tests.conftest import wait_for
from tests.httpc import aws

YAML = """
buses:
  - {name: shop, description: the shop}
rules:
  - name: from-yaml
    description: declared in YAML
    event_pattern: {source: [yaml]}
    targets: [{id: t, function: probe.record, dead_letter: true}]
"""


@pytest.fixture
def client(stack, events_client):
    stack.write_rules(YAML)
    stack.start_broker()
    return events_client(stack.url)


def test_list_and_describe_event_buses(client):
    names = [b["Name"] for b in client.list_event_buses()["EventBuses"]]
    assert names == ["default", "shop"]
    shop = client.describe_event_bus(Name="shop")
    assert shop["Arn"].endswith(":event-bus/shop") and shop["Description"] == "the shop"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_event_bus(Name="nope")


def test_yaml_rules_are_listed_and_described(client):
    [rule] = client.list_rules()["Rules"]
    assert rule["Name"] == "from-yaml" and rule["State"] == "ENABLED"
    assert json.loads(rule["EventPattern"]) == {"source": ["yaml"]}
    described = client.describe_rule(Name="from-yaml")
    assert described["Arn"].endswith(":rule/from-yaml")
    [target] = client.list_targets_by_rule(Rule="from-yaml")["Targets"]
    assert target["Arn"].endswith(":function:probe.record")
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}
    assert "DeadLetterConfig" in target


def test_unknown_rule_is_resource_not_found(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException) as err:
        client.describe_rule(Name="nope")
    assert "Rule nope does not exist on EventBus default." in str(err.value)


@pytest.mark.cluster
def test_put_rule_and_put_targets_take_effect_without_restart(stack, client):
    stack.start_worker()
    arn = client.put_rule(Name="api-rule", EventPattern=json.dumps({"source": ["api"]}))["RuleArn"]
    assert arn.endswith(":rule/api-rule")
    resp = client.put_targets(Rule="api-rule", Targets=[
        {"Id": "t", "Arn": "arn:aws:lambda:us-east-1:000000000000:function:probe.record",
         "RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 600}}])
    assert resp["FailedEntryCount"] == 0
    client.put_events(Entries=[{"Source": "api", "DetailType": "T", "Detail": "{}"}])
    [call] = stack.wait_records(1)
    assert call["context"]["rule_name"] == "api-rule"


@pytest.mark.cluster
def test_disabled_rule_stops_matching_and_enabled_rule_resumes(stack, client, r):
    client.put_rule(Name="toggle", EventPattern=json.dumps({"source": ["api"]}))
    client.put_targets(Rule="toggle", Targets=[{"Id": "t", "Arn": "probe.record"}])
    client.disable_rule(Name="toggle")
    assert client.describe_rule(Name="toggle")["State"] == "DISABLED"
    client.put_events(Entries=[{"Source": "api", "DetailType": "T", "Detail": "{}"}])
    assert r.xlen(stream_key("default/toggle/t")) == 0
    client.enable_rule(Name="toggle")
    client.put_events(Entries=[{"Source": "api", "DetailType": "T", "Detail": "{}"}])
    assert r.xlen(stream_key("default/toggle/t")) == 1


def test_invalid_pattern_is_an_invalid_event_pattern_exception(client):
    with pytest.raises(client.exceptions.InvalidEventPatternException):
        client.put_rule(Name="bad", EventPattern=json.dumps({"source": "not-a-list"}))


def test_invalid_schedule_is_a_validation_exception(client):
    with pytest.raises(ClientError) as err:
        client.put_rule(Name="bad", ScheduleExpression="rate(5 minute)")
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_yaml_rules_cannot_be_changed_through_the_api(client):
    for call in (lambda: client.put_rule(Name="from-yaml", EventPattern='{"source": ["x"]}'),
                 lambda: client.disable_rule(Name="from-yaml"),
                 lambda: client.delete_rule(Name="from-yaml", Force=True)):
        with pytest.raises(client.exceptions.ManagedRuleException):
            call()


def test_rule_with_targets_cannot_be_deleted_until_they_are_removed(client):
    client.put_rule(Name="gone", EventPattern='{"source": ["x"]}')
    client.put_targets(Rule="gone", Targets=[{"Id": "t", "Arn": "probe.record"}])
    with pytest.raises(ClientError) as err:
        client.delete_rule(Name="gone")
    assert "has targets" in err.value.response["Error"]["Message"]
    client.remove_targets(Rule="gone", Ids=["t"])
    client.delete_rule(Name="gone")
    assert [r["Name"] for r in client.list_rules()["Rules"]] == ["from-yaml"]


def test_target_arn_must_name_a_function(client):
    client.put_rule(Name="r", EventPattern='{"source": ["x"]}')
    resp = client.put_targets(Rule="r", Targets=[{"Id": "t", "Arn": "arn:aws:sns:us-east-1:1:topic"}])
    assert resp["FailedEntryCount"] == 1
    assert resp["FailedEntries"][0]["TargetId"] == "t"


@pytest.mark.cluster
def test_a_rule_put_on_one_broker_reaches_the_others(stack, client, events_client):
    first_url = stack.url
    stack.start_broker()  # a second broker on another port
    other = events_client(stack.url)
    client_first = events_client(first_url)
    client_first.put_rule(Name="shared", EventPattern='{"source": ["x"]}')
    wait_for(lambda: any(r["Name"] == "shared" for r in other.list_rules()["Rules"]), timeout=5,
             what="the other broker to see the rule")


@pytest.mark.cluster
def test_a_schedule_rule_put_through_the_api_fires_without_restart(stack, client):
    from datetime import datetime, timedelta, timezone
    stack.start_worker()
    at = (datetime.now(timezone.utc) + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%S")
    client.put_rule(Name="soon", ScheduleExpression=f"at({at})")
    client.put_targets(Rule="soon", Targets=[{"Id": "t", "Arn": "probe.record"}])
    [call] = stack.wait_records(1, timeout=15)
    event = call["event"]
    assert (event["source"], event["detail-type"], event["detail"]) == ("aws.events", "Scheduled Event", {})
    assert event["time"] == at + "Z"
    assert event["resources"][0].endswith(":rule/soon")


def test_put_rule_on_an_undeclared_bus_is_resource_not_found(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException) as err:
        client.put_rule(Name="r", EventBusName="nowhere", EventPattern='{"source": ["x"]}')
    assert "Event bus nowhere does not exist." in str(err.value)


def test_an_invalid_rule_name_is_a_validation_exception(client):
    with pytest.raises(ClientError) as err:
        client.put_rule(Name="no spaces", EventPattern='{"source": ["x"]}')
    assert err.value.response["Error"] == {"Code": "ValidationException",
                                           "Message": "Parameter Name is not valid: 'no spaces'."}


def test_a_pattern_that_is_not_json_is_an_invalid_event_pattern_exception(client):
    with pytest.raises(client.exceptions.InvalidEventPatternException):
        client.put_rule(Name="bad", EventPattern="{not json")


def test_a_target_with_a_retry_policy_out_of_range_fails_alone(client):
    client.put_rule(Name="r", EventPattern='{"source": ["x"]}')
    resp = client.put_targets(Rule="r", Targets=[
        {"Id": "bad", "Arn": "probe.record", "RetryPolicy": {"MaximumRetryAttempts": 186}},
        {"Id": "good", "Arn": "probe.record"}])
    assert resp["FailedEntries"] == [{"TargetId": "bad", "ErrorCode": "ValidationException",
                                      "ErrorMessage": "Target bad: RetryPolicy is out of range."}]
    assert [t["Id"] for t in client.list_targets_by_rule(Rule="r")["Targets"]] == ["good"]


def test_a_sixth_target_is_a_limit_exceeded_exception(client):
    client.put_rule(Name="r", EventPattern='{"source": ["x"]}')
    client.put_targets(Rule="r", Targets=[{"Id": f"t{i}", "Arn": "probe.record"} for i in range(5)])
    with pytest.raises(client.exceptions.LimitExceededException):
        client.put_targets(Rule="r", Targets=[{"Id": "t5", "Arn": "probe.record"}])
    assert len(client.list_targets_by_rule(Rule="r")["Targets"]) == 5


def test_target_arns_in_another_region_or_with_a_version_name_the_function(client):
    client.put_rule(Name="r", EventPattern='{"source": ["x"]}')
    resp = client.put_targets(Rule="r", Targets=[
        {"Id": "t", "Arn": "arn:aws:lambda:eu-west-1:123456789012:function:probe.record:$LATEST"}])
    assert resp["FailedEntryCount"] == 0
    [target] = client.list_targets_by_rule(Rule="r")["Targets"]
    assert target["Arn"] == "arn:aws:lambda:us-east-1:000000000000:function:probe.record"


def test_a_stored_rule_that_does_not_load_is_skipped_and_a_broker_still_starts(stack, client, r):
    client.put_rule(Name="good", EventPattern=json.dumps({"source": ["x"]}))
    r.hset(API_RULES, api_rule_field("default", "wrong-type"), b'{"name": "wrong-type", "description": 123}')
    r.hset(API_RULES, api_rule_field("default", "not-json"), b"{nope")
    r.hset(API_RULES, api_rule_field("default", "bad-pattern"),
           b'{"name": "bad-pattern", "event_pattern": {"source": "not a list"}}')
    r.incr(API_VERSION)
    first = stack.url
    stack.start_broker()  # would exit at startup if one bad rule stopped the load
    for url in (first, stack.url):  # the running broker reloads past them too
        assert wait_for(lambda: [x["Name"] for x in aws(url, "ListRules", {})[1]["Rules"]] == ["from-yaml", "good"],
                        what="the good rules listed")
        assert aws(url, "PutRule", {"Name": "later", "EventPattern": '{"source": ["y"]}'})[0] == 200
    assert stack.logs().count("stored API rule skipped") >= 3
    import urllib.request
    scraped = urllib.request.urlopen(stack.url + "/metrics", timeout=5).read().decode()
    for reason in ("unreadable", "invalid"):  # not JSON or the wrong type / a pattern that does not compile
        line = next(x for x in scraped.splitlines() if x.startswith(f'busway_api_rules_skipped_total{{reason="{reason}"}}'))
        assert float(line.split()[-1]) >= 1, line


def test_api_rules_past_the_per_bus_quota_are_a_limit_exceeded_exception(stack):
    stack.write_rules(YAML)
    stack.env["BUS_MAX_API_RULES_PER_BUS"] = "2"
    stack.start_broker()
    pattern = '{"source": ["x"]}'
    for name in ("a", "b"):
        assert aws(stack.url, "PutRule", {"Name": name, "EventPattern": pattern})[0] == 200
    status, answer = aws(stack.url, "PutRule", {"Name": "c", "EventPattern": pattern})
    assert (status, answer["__type"]) == (400, "LimitExceededException")
    assert aws(stack.url, "PutRule", {"Name": "a", "EventPattern": pattern, "State": "DISABLED"})[0] == 200  # a change, not a new rule
    assert aws(stack.url, "PutRule", {"Name": "c", "EventPattern": pattern, "EventBusName": "shop"})[0] == 200  # per bus
    assert aws(stack.url, "DeleteRule", {"Name": "b"})[0] == 200
    assert aws(stack.url, "PutRule", {"Name": "c", "EventPattern": pattern})[0] == 200


def test_a_put_rule_with_a_wrong_type_stores_nothing_and_later_put_rules_work(client, stack, r):
    status, answer = aws(stack.url, "PutRule", {"Name": "typed", "EventPattern": '{"source": ["x"]}', "Description": 123})
    assert (status, answer["__type"]) == (400, "SerializationException")
    assert "Description" in answer["message"]
    assert r.hlen(API_RULES) == 0
    client.put_rule(Name="typed", EventPattern='{"source": ["x"]}', Description="text")
    assert client.describe_rule(Name="typed")["Description"] == "text"
