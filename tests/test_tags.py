"""Tags through the AWS API, as boto3 calls them, against `bus serve`: TagResource,
UntagResource and ListTagsForResource on each kind of resource, the Tags of CreateEventBus and
PutRule, AWS's limits, and unknown resources."""
from __future__ import annotations

import botocore.exceptions
import pytest

from bus import secrets

RULES = """\
buses:
  - name: shop
rules:
  - name: from-yaml
    bus: shop
    event_pattern: {source: [s]}
    targets:
      - {id: t, function: handlers.record}
"""
ACCOUNT_REGION = "arn:aws:events:us-east-1:000000000000"
SHOP = f"{ACCOUNT_REGION}:event-bus/shop"


@pytest.fixture
def client(stack, events_client):
    stack.env["BUS_SECRETS_KEY"] = secrets.new_key()  # CreateConnection seals its key with it
    stack.write_rules(RULES)
    stack.start_broker()
    return events_client(stack.url)


def tags_of(client, arn: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in client.list_tags_for_resource(ResourceARN=arn)["Tags"]}


def error_of(call) -> tuple[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call()
    return info.value.response["Error"]["Code"], info.value.response["Error"]["Message"]


def test_tag_merges_untag_removes_and_list_shows_a_bus_tags(client):
    client.tag_resource(ResourceARN=SHOP, Tags=[{"Key": "team", "Value": "a"}, {"Key": "cost", "Value": "1"}])
    client.tag_resource(ResourceARN=SHOP, Tags=[{"Key": "team", "Value": "b"}, {"Key": "env", "Value": ""}])
    assert tags_of(client, SHOP) == {"team": "b", "cost": "1", "env": ""}
    client.untag_resource(ResourceARN=SHOP, TagKeys=["cost", "never-there"])
    assert tags_of(client, SHOP) == {"team": "b", "env": ""}


def test_a_bus_arn_of_another_region_names_the_same_bus(client):
    client.tag_resource(ResourceARN=SHOP, Tags=[{"Key": "k", "Value": "v"}])
    assert tags_of(client, "arn:aws:events:eu-west-1:000000000000:event-bus/shop") == {"k": "v"}


def test_create_event_bus_keeps_its_tags_and_delete_forgets_them(client):
    arn = client.create_event_bus(Name="new", Tags=[{"Key": "a", "Value": "1"}])["EventBusArn"]
    assert tags_of(client, arn) == {"a": "1"}
    client.delete_event_bus(Name="new")
    assert error_of(lambda: tags_of(client, arn))[0] == "ResourceNotFoundException"
    client.create_event_bus(Name="new")
    assert tags_of(client, arn) == {}


def test_put_rule_tags_are_listed_and_can_be_untagged(client):
    arn = client.put_rule(Name="r", EventPattern='{"source":["x"]}', Tags=[{"Key": "a", "Value": "1"},
                                                                           {"Key": "b", "Value": "2"}])["RuleArn"]
    assert tags_of(client, arn) == {"a": "1", "b": "2"}
    client.untag_resource(ResourceARN=arn, TagKeys=["a"])
    client.tag_resource(ResourceARN=arn, Tags=[{"Key": "c", "Value": "3"}])
    assert tags_of(client, arn) == {"b": "2", "c": "3"}


def test_delete_rule_forgets_its_tags(client):
    arn = client.put_rule(Name="r", EventPattern='{"source":["x"]}')["RuleArn"]
    client.tag_resource(ResourceARN=arn, Tags=[{"Key": "a", "Value": "1"}])
    client.delete_rule(Name="r")
    client.put_rule(Name="r", EventPattern='{"source":["x"]}', Tags=[{"Key": "fresh", "Value": "yes"}])
    assert tags_of(client, arn) == {"fresh": "yes"}


def test_a_rule_on_a_custom_bus_and_a_yaml_rule_take_tags(client):
    arn = f"{ACCOUNT_REGION}:rule/shop/from-yaml"
    client.tag_resource(ResourceARN=arn, Tags=[{"Key": "owner", "Value": "ops"}])
    assert tags_of(client, arn) == {"owner": "ops"}
    # the same name on the default bus is another rule, which does not exist
    assert error_of(lambda: tags_of(client, f"{ACCOUNT_REGION}:rule/from-yaml"))[0] == "ResourceNotFoundException"


def test_a_connection_and_an_api_destination_take_tags(client):
    conn = client.create_connection(Name="c", AuthorizationType="API_KEY", AuthParameters={
        "ApiKeyAuthParameters": {"ApiKeyName": "x-key", "ApiKeyValue": "v"}})["ConnectionArn"]
    dest = client.create_api_destination(Name="d", ConnectionArn=conn, InvocationEndpoint="https://example.com/",
                                         HttpMethod="POST")["ApiDestinationArn"]
    client.tag_resource(ResourceARN=conn, Tags=[{"Key": "kind", "Value": "connection"}])
    client.tag_resource(ResourceARN=dest, Tags=[{"Key": "kind", "Value": "destination"}])
    assert tags_of(client, conn) == {"kind": "connection"}
    assert tags_of(client, dest) == {"kind": "destination"}
    wrong_id = conn.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    assert error_of(lambda: tags_of(client, wrong_id))[0] == "ResourceNotFoundException"


def test_an_archive_takes_tags(client):
    arn = client.create_archive(ArchiveName="all", EventSourceArn=SHOP)["ArchiveArn"]
    client.tag_resource(ResourceARN=arn, Tags=[{"Key": "keep", "Value": "forever"}])
    assert tags_of(client, arn) == {"keep": "forever"}


@pytest.mark.parametrize("arn", [f"{ACCOUNT_REGION}:event-bus/nope", f"{ACCOUNT_REGION}:rule/nope",
                                 f"{ACCOUNT_REGION}:archive/nope", f"{ACCOUNT_REGION}:replay/nope",
                                 "arn:aws:sqs:us-east-1:000000000000:q", "not-an-arn"])
def test_an_unknown_resource_is_resource_not_found(client, arn):
    for call in (lambda: client.tag_resource(ResourceARN=arn, Tags=[{"Key": "a", "Value": "1"}]),
                 lambda: client.untag_resource(ResourceARN=arn, TagKeys=["a"]),
                 lambda: client.list_tags_for_resource(ResourceARN=arn)):
        assert error_of(call)[0] == "ResourceNotFoundException"


def test_more_than_50_tags_on_a_resource_is_refused_and_changes_nothing(client):
    client.tag_resource(ResourceARN=SHOP, Tags=[{"Key": f"k{i}", "Value": ""} for i in range(49)])
    code, message = error_of(lambda: client.tag_resource(ResourceARN=SHOP, Tags=[{"Key": "x", "Value": ""},
                                                                                 {"Key": "y", "Value": ""}]))
    assert (code, message) == ("ValidationException", "A resource can have at most 50 tags.")
    assert len(tags_of(client, SHOP)) == 49
    client.tag_resource(ResourceARN=SHOP, Tags=[{"Key": "k0", "Value": "again"}, {"Key": "x", "Value": ""}])
    assert len(tags_of(client, SHOP)) == 50


@pytest.mark.parametrize("tag, why", [({"Key": "k" * 129, "Value": "v"}, "Key"),
                                      ({"Key": "k", "Value": "v" * 257}, "Value"),
                                      ({"Key": "aws:owner", "Value": "v"}, "reserved"),
                                      ({"Key": "AWS:owner", "Value": "v"}, "reserved")])
def test_a_tag_outside_aws_limits_is_a_validation_exception(client, tag, why):
    code, message = error_of(lambda: client.tag_resource(ResourceARN=SHOP, Tags=[tag]))
    assert code == "ValidationException" and why in message
    assert tags_of(client, SHOP) == {}


def test_untagging_a_reserved_key_and_create_event_bus_with_bad_tags_are_refused(client):
    assert error_of(lambda: client.untag_resource(ResourceARN=SHOP, TagKeys=["aws:x"]))[0] == "ValidationException"
    assert error_of(lambda: client.create_event_bus(Name="b", Tags=[{"Key": "aws:x", "Value": "1"}]))[0] == \
        "ValidationException"
    assert "b" not in [b["Name"] for b in client.list_event_buses()["EventBuses"]]
