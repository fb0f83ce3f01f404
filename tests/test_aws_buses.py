"""Event buses through the AWS API, as boto3 calls them: create, describe, update, delete, and
API rules on an API bus that route, on every broker and across a broker restart."""
import json

import pytest
from botocore.exceptions import ClientError

from bus.config.model import Bus, Config, Rule
from bus.config.ruleset import declared, merge
from bus.store.keys import stream_key
from tests.conftest import wait_for

YAML = """
buses:
  - {name: shop, description: the shop}
"""
FUNCTION = "arn:aws:lambda:us-east-1:000000000000:function:probe.record"


def _code(err: pytest.ExceptionInfo) -> str:
    return err.value.response["Error"]["Code"]


@pytest.fixture
def client(stack, events_client):
    stack.write_rules(YAML)
    stack.start_broker()
    return events_client(stack.url)


def _rule_on(client, bus: str, name: str = "r") -> None:
    client.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps({"source": ["x"]}))
    client.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "t", "Arn": FUNCTION}])


def test_a_created_bus_is_listed_and_described_with_its_times(client):
    created = client.create_event_bus(Name="orders", Description="order events")
    assert created["EventBusArn"] == "arn:aws:events:us-east-1:000000000000:event-bus/orders"
    assert created["Description"] == "order events"
    described = client.describe_event_bus(Name="orders")
    assert (described["Name"], described["Description"]) == ("orders", "order events")
    assert described["CreationTime"] == described["LastModifiedTime"]
    assert [b["Name"] for b in client.list_event_buses()["EventBuses"]] == ["default", "orders", "shop"]


def test_yaml_buses_show_the_broker_start_as_their_creation_time(client):
    default = client.describe_event_bus()
    assert default["Name"] == "default" and "CreationTime" in default and "LastModifiedTime" in default


def test_list_event_buses_filters_by_prefix_and_pages(client):
    for name in ("o1", "o2", "o3"):
        client.create_event_bus(Name=name)
    assert [b["Name"] for b in client.list_event_buses(NamePrefix="o")["EventBuses"]] == ["o1", "o2", "o3"]
    first = client.list_event_buses(Limit=3)
    rest = client.list_event_buses(Limit=3, NextToken=first["NextToken"])
    assert "NextToken" not in rest
    assert [b["Name"] for b in first["EventBuses"] + rest["EventBuses"]] == ["default", "o1", "o2", "o3", "shop"]


def test_a_bus_name_taken_is_resource_already_exists(client):
    client.create_event_bus(Name="orders")
    for name in ("orders", "shop", "default"):
        with pytest.raises(client.exceptions.ResourceAlreadyExistsException):
            client.create_event_bus(Name=name)


@pytest.mark.parametrize("name", ["a/b", "no spaces", "x" * 257])
def test_an_invalid_bus_name_is_a_validation_exception(client, name):
    with pytest.raises(ClientError) as err:
        client.create_event_bus(Name=name)
    assert _code(err) == "ValidationException"


def test_a_member_busway_does_not_support_is_refused_by_name(client):
    with pytest.raises(ClientError) as err:
        client.create_event_bus(Name="orders", KmsKeyIdentifier="alias/mine")
    assert _code(err) == "ValidationException" and "KmsKeyIdentifier" in str(err.value)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_event_bus(Name="orders")


def test_an_update_changes_the_description_and_the_last_modified_time(client):
    client.create_event_bus(Name="orders", Description="old")
    before = client.describe_event_bus(Name="orders")
    updated = client.update_event_bus(Name="orders", Description="new")
    assert (updated["Name"], updated["Description"]) == ("orders", "new")
    after = client.describe_event_bus(Name="orders")
    assert after["Description"] == "new" and after["LastModifiedTime"] > before["LastModifiedTime"]
    assert after["CreationTime"] == before["CreationTime"]


def test_an_update_of_an_unknown_bus_is_resource_not_found(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.update_event_bus(Name="nope", Description="x")


def test_yaml_buses_are_read_only(client):
    for call in (lambda: client.update_event_bus(Name="shop", Description="x"),
                 lambda: client.delete_event_bus(Name="shop")):
        with pytest.raises(client.exceptions.ManagedRuleException):
            call()


def test_the_default_bus_cannot_be_deleted(client):
    with pytest.raises(ClientError) as err:
        client.delete_event_bus(Name="default")
    assert err.value.response["Error"] == {"Code": "ValidationException", "Message": "Cannot delete event bus default."}


def test_a_bus_with_rules_cannot_be_deleted_until_they_are_gone(client):
    client.create_event_bus(Name="orders")
    _rule_on(client, "orders")
    with pytest.raises(ClientError) as err:
        client.delete_event_bus(Name="orders")
    assert err.value.response["Error"]["Message"] == "EventBus can't be deleted since it has rules."
    client.delete_rule(Name="r", EventBusName="orders", Force=True)
    client.delete_event_bus(Name="orders")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_event_bus(Name="orders")


def test_deleting_a_bus_that_is_not_there_succeeds(client):
    client.delete_event_bus(Name="never-was")


def test_an_event_put_on_an_api_bus_is_routed_by_its_api_rules(stack, client):
    stack.start_worker()
    client.create_event_bus(Name="orders")
    _rule_on(client, "orders")
    resp = client.put_events(Entries=[{"Source": "x", "DetailType": "T", "Detail": "{}", "EventBusName": "orders"}])
    assert resp["FailedEntryCount"] == 0
    [call] = stack.wait_records(1)
    assert call["event"]["source"] == "x"


def test_api_rules_on_an_api_bus_still_route_after_a_broker_restart(stack, client, events_client, r):
    client.create_event_bus(Name="orders")
    _rule_on(client, "orders")
    stack.procs[-1].terminate()
    stack.procs[-1].wait(10)
    stack.start_broker()
    again = events_client(stack.url)
    assert [x["Name"] for x in again.list_rules(EventBusName="orders")["Rules"]] == ["r"]
    again.put_events(Entries=[{"Source": "x", "DetailType": "T", "Detail": "{}", "EventBusName": "orders"}])
    assert r.xlen(stream_key("orders/r/t")) == 1


def test_a_bus_created_on_one_broker_reaches_the_others(stack, client, events_client):
    stack.start_broker()
    other = events_client(stack.url)
    client.create_event_bus(Name="orders")
    wait_for(lambda: "orders" in [b["Name"] for b in other.list_event_buses()["EventBuses"]], timeout=5,
             what="the other broker to see the bus")
    _rule_on(other, "orders")  # and it takes rules there, which the first broker sees too
    wait_for(lambda: [x["Name"] for x in client.list_rules(EventBusName="orders")["Rules"]] == ["r"], timeout=5,
             what="the first broker to see the rule")


def test_buses_past_the_quota_are_a_limit_exceeded_exception(stack, events_client):
    stack.env["BUS_MAX_API_BUSES"] = "1"
    stack.start_broker()
    client = events_client(stack.url)
    client.create_event_bus(Name="one")
    with pytest.raises(client.exceptions.LimitExceededException):
        client.create_event_bus(Name="two")


def test_api_buses_count_as_declared_and_yaml_wins_a_name_clash():
    yaml = Config(buses={"default": Bus("default"), "shop": Bus("shop", "from yaml")}, rules={}, functions={})
    base = declared(yaml, {"shop": Bus("shop", "from the api"), "orders": Bus("orders")}, {}, {})
    assert base.buses["shop"].description == "from yaml" and "orders" in base.buses
    rule = Rule(name="r", bus="orders", event_pattern={"source": ["x"]})
    assert merge(base, {("orders", "r"): rule}).rules == {("orders", "r"): rule}
    assert merge(yaml, {("orders", "r"): rule}).rules == {}  # without the API's buses it is left out
