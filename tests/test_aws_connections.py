"""Connections and API destinations through the AWS API, as boto3 calls them: each operation, its
errors, secrets that never come back out, and every broker seeing what one broker stored."""
import json

import pytest
from botocore.exceptions import ClientError

from bus import secrets
from bus.config.model import HttpTarget, Rule
from bus.store import apirules
from bus.store.deliveries import decode_record
from bus.store.keys import REGISTRY, target_key
from tests.conftest import wait_for, with_client
from tests.httpc import aws

YAML = """
connections:
  - name: yaml-conn
    authorization: {api_key: {header: x-api-key, value_from_env: YAML_KEY}}
api_destinations:
  - name: yaml-dest
    connection: yaml-conn
    endpoint: http://127.0.0.1:9/hook
"""
API_KEY = {"ApiKeyAuthParameters": {"ApiKeyName": "x-api-key", "ApiKeyValue": "s3cr3t-api-key-value"}}
BASIC = {"BasicAuthParameters": {"Username": "crm-user", "Password": "s3cr3t-basic-password"}}
OAUTH = {"OAuthParameters": {"ClientParameters": {"ClientID": "client-1", "ClientSecret": "s3cr3t-client-secret"},
                             "AuthorizationEndpoint": "http://127.0.0.1:9/token", "HttpMethod": "POST"}}
SECRETS = ("s3cr3t-api-key-value", "s3cr3t-basic-password", "s3cr3t-client-secret")


def _code(err: pytest.ExceptionInfo) -> str:
    return err.value.response["Error"]["Code"]


@pytest.fixture
def stack_with_key(stack):
    stack.env["BUS_SECRETS_KEY"] = secrets.new_key()
    stack.write_rules(YAML)
    return stack


@pytest.fixture
def client(stack_with_key, events_client):
    stack_with_key.start_broker()
    return events_client(stack_with_key.url)


def _connection(client, name="crm", auth_type="API_KEY", params=API_KEY):
    return client.create_connection(Name=name, AuthorizationType=auth_type, AuthParameters=params)


def _destination(client, name="orders", connection_arn=None, **kw):
    return client.create_api_destination(Name=name, ConnectionArn=connection_arn, HttpMethod=kw.pop("HttpMethod", "POST"),
                                         InvocationEndpoint=kw.pop("InvocationEndpoint", "http://127.0.0.1:9/orders/*"), **kw)


# --- connections ---------------------------------------------------------------------------

def test_a_created_connection_is_authorized_and_described_without_its_secret(client):
    created = _connection(client)
    assert created["ConnectionArn"].startswith("arn:aws:events:us-east-1:000000000000:connection/crm/")
    assert created["ConnectionState"] == "AUTHORIZED"
    described = client.describe_connection(Name="crm")
    assert described["ConnectionArn"] == created["ConnectionArn"]
    assert described["AuthorizationType"] == "API_KEY"
    assert described["AuthParameters"] == {"ApiKeyAuthParameters": {"ApiKeyName": "x-api-key"}}
    assert described["CreationTime"] == created["CreationTime"] and "LastAuthorizedTime" in described


def test_basic_and_oauth_connections_show_the_user_and_client_id_only(client):
    _connection(client, "basic", "BASIC", BASIC)
    _connection(client, "oauth", "OAUTH_CLIENT_CREDENTIALS", OAUTH)
    assert client.describe_connection(Name="basic")["AuthParameters"] == {"BasicAuthParameters": {"Username": "crm-user"}}
    assert client.describe_connection(Name="oauth")["AuthParameters"] == {"OAuthParameters": {
        "ClientParameters": {"ClientID": "client-1"}, "AuthorizationEndpoint": "http://127.0.0.1:9/token",
        "HttpMethod": "POST"}}


def test_invocation_parameters_are_kept_and_shown(client):
    params = {**API_KEY, "InvocationHttpParameters": {
        "HeaderParameters": [{"Key": "x-team", "Value": "orders", "IsValueSecret": False}],
        "QueryStringParameters": [{"Key": "v", "Value": "2"}]}}
    _connection(client, params=params)
    shown = client.describe_connection(Name="crm")["AuthParameters"]["InvocationHttpParameters"]
    assert shown == {"HeaderParameters": [{"Key": "x-team", "Value": "orders", "IsValueSecret": False}],
                     "QueryStringParameters": [{"Key": "v", "Value": "2", "IsValueSecret": False}]}


def test_a_secret_invocation_parameter_is_refused_by_name(client):
    params = {**API_KEY, "InvocationHttpParameters": {"HeaderParameters": [{"Key": "x-t", "Value": "v", "IsValueSecret": True}]}}
    with pytest.raises(ClientError) as err:
        _connection(client, params=params)
    assert _code(err) == "ValidationException" and "IsValueSecret" in str(err.value)
    assert client.list_connections()["Connections"][0]["Name"] == "yaml-conn"  # nothing stored


def test_list_connections_filters_by_prefix_and_state_and_pages(client):
    for name in ("a1", "a2", "b1"):
        _connection(client, name)
    client.deauthorize_connection(Name="a2")
    assert [c["Name"] for c in client.list_connections(NamePrefix="a")["Connections"]] == ["a1", "a2"]
    assert [c["Name"] for c in client.list_connections(ConnectionState="DEAUTHORIZED")["Connections"]] == ["a2"]
    first = client.list_connections(Limit=2)
    rest = client.list_connections(Limit=2, NextToken=first["NextToken"])
    assert [c["Name"] for c in first["Connections"] + rest["Connections"]] == ["a1", "a2", "b1", "yaml-conn"]
    assert first["Connections"][0]["AuthorizationType"] == "API_KEY"


def test_listing_by_a_state_aws_does_not_have_is_a_validation_exception(client):
    with pytest.raises(ClientError) as err:
        client.list_connections(ConnectionState="SLEEPING")
    assert _code(err) == "ValidationException"


def test_a_connection_name_taken_is_resource_already_exists(client):
    _connection(client)
    for name in ("crm", "yaml-conn"):
        with pytest.raises(client.exceptions.ResourceAlreadyExistsException):
            _connection(client, name)


def test_authorization_parameters_of_another_kind_are_a_validation_exception(client):
    with pytest.raises(ClientError) as err:
        client.create_connection(Name="c", AuthorizationType="API_KEY", AuthParameters={**API_KEY, **BASIC})
    assert _code(err) == "ValidationException" and "BasicAuthParameters" in str(err.value)
    with pytest.raises(ClientError) as err:
        client.create_connection(Name="c", AuthorizationType="BASIC", AuthParameters={})
    assert _code(err) == "ValidationException" and "BasicAuthParameters is required" in str(err.value)


def test_without_bus_secrets_key_a_connection_is_refused_naming_it_and_nothing_is_stored(stack, events_client, r):
    stack.env.pop("BUS_SECRETS_KEY", None)
    stack.start_broker()
    client = events_client(stack.url)
    with pytest.raises(ClientError) as err:
        _connection(client)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert _code(err) == "ValidationException" and "BUS_SECRETS_KEY" in str(err.value)
    assert client.list_connections()["Connections"] == []
    assert [k for k in r.keys("busway:{api}:*") if b":replay:" not in k] == []  # (the replay leader's keys are there)


def test_an_update_replaces_the_secret_it_gives_and_keeps_the_rest(stack_with_key, client, r, monkeypatch):
    _connection(client, params={**API_KEY, "InvocationHttpParameters": {"QueryStringParameters": [{"Key": "v", "Value": "1"}]}})
    updated = client.update_connection(Name="crm", Description="the CRM",
                                       AuthParameters={"ApiKeyAuthParameters": {"ApiKeyValue": "n3w-api-key-value"}})
    assert updated["ConnectionState"] == "AUTHORIZED"
    after = _stored_connection(r, "crm")
    api_key = after["authorization"]["api_key"]
    monkeypatch.setenv(secrets.ENV, stack_with_key.env[secrets.ENV])  # the workers' key, to open it as they do
    assert (api_key["header"], secrets.unseal(api_key["value_sealed"])) == ("x-api-key", "n3w-api-key-value")
    assert after["invocation_http_parameters"]["query_string_parameters"] == {"v": "1"}
    described = client.describe_connection(Name="crm")
    assert described["Description"] == "the CRM" and described["LastModifiedTime"] >= described["CreationTime"]


def test_an_update_to_another_kind_needs_all_of_its_parameters(client):
    _connection(client)
    with pytest.raises(ClientError) as err:
        client.update_connection(Name="crm", AuthorizationType="BASIC", AuthParameters={"BasicAuthParameters": {"Username": "u"}})
    assert _code(err) == "ValidationException" and "Password" in str(err.value)
    client.update_connection(Name="crm", AuthorizationType="BASIC", AuthParameters=BASIC)
    assert client.describe_connection(Name="crm")["AuthParameters"] == {"BasicAuthParameters": {"Username": "crm-user"}}


def test_deauthorize_removes_the_secret_until_an_update_gives_a_new_one(client, r):
    _connection(client)
    assert client.deauthorize_connection(Name="crm")["ConnectionState"] == "DEAUTHORIZED"
    assert _stored_connection(r, "crm")["authorization"]["api_key"].get("value_sealed") is None
    assert client.describe_connection(Name="crm")["ConnectionState"] == "DEAUTHORIZED"
    client.update_connection(Name="crm", Description="still no secret")
    assert client.describe_connection(Name="crm")["ConnectionState"] == "DEAUTHORIZED"
    client.update_connection(Name="crm", AuthParameters={"ApiKeyAuthParameters": {"ApiKeyValue": "another-key"}})
    assert client.describe_connection(Name="crm")["ConnectionState"] == "AUTHORIZED"


def test_an_unknown_connection_is_resource_not_found(client):
    for call in (client.describe_connection, client.delete_connection, client.deauthorize_connection,
                 client.update_connection):
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            call(Name="nope")


def test_a_yaml_connection_is_listed_but_read_only(client):
    described = client.describe_connection(Name="yaml-conn")
    assert described["AuthParameters"] == {"ApiKeyAuthParameters": {"ApiKeyName": "x-api-key"}}
    assert "YAML_KEY" not in json.dumps(described, default=str)  # not even the variable's name
    for call in (lambda: client.update_connection(Name="yaml-conn", Description="x"),
                 lambda: client.deauthorize_connection(Name="yaml-conn"),
                 lambda: client.delete_connection(Name="yaml-conn")):
        with pytest.raises(client.exceptions.ManagedRuleException):
            call()


def test_a_connection_used_by_an_api_destination_cannot_be_deleted(client):
    arn = _connection(client)["ConnectionArn"]
    _destination(client, connection_arn=arn)
    with pytest.raises(ClientError) as err:
        client.delete_connection(Name="crm")
    assert _code(err) == "ValidationException" and "orders" in str(err.value)
    client.delete_api_destination(Name="orders")
    assert client.delete_connection(Name="crm")["ConnectionState"] == "DELETING"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_connection(Name="crm")


def test_connections_past_the_quota_are_a_limit_exceeded_exception(stack_with_key, events_client):
    stack_with_key.env["BUS_MAX_API_CONNECTIONS"] = "2"
    stack_with_key.start_broker()
    client = events_client(stack_with_key.url)
    _connection(client, "c1")
    _connection(client, "c2")
    with pytest.raises(client.exceptions.LimitExceededException):
        _connection(client, "c3")


# --- API destinations ------------------------------------------------------------------------

def test_an_api_destination_is_created_described_and_listed(client):
    connection_arn = _connection(client)["ConnectionArn"]
    created = _destination(client, connection_arn=connection_arn, InvocationRateLimitPerSecond=20, Description="orders")
    assert created["ApiDestinationArn"].startswith("arn:aws:events:us-east-1:000000000000:api-destination/orders/")
    assert created["ApiDestinationState"] == "ACTIVE"
    described = client.describe_api_destination(Name="orders")
    assert {k: described[k] for k in ("ConnectionArn", "InvocationEndpoint", "HttpMethod", "InvocationRateLimitPerSecond",
                                      "Description")} == {
        "ConnectionArn": connection_arn, "InvocationEndpoint": "http://127.0.0.1:9/orders/*", "HttpMethod": "POST",
        "InvocationRateLimitPerSecond": 20, "Description": "orders"}
    listed = client.list_api_destinations(ConnectionArn=connection_arn)["ApiDestinations"]
    assert [d["Name"] for d in listed] == ["orders"]
    assert [d["Name"] for d in client.list_api_destinations()["ApiDestinations"]] == ["orders", "yaml-dest"]


def test_the_rate_limit_defaults_to_300(client):
    _destination(client, connection_arn=_connection(client)["ConnectionArn"])
    assert client.describe_api_destination(Name="orders")["InvocationRateLimitPerSecond"] == 300


def test_a_destination_of_an_unknown_or_malformed_connection_arn_is_refused(client):
    arn = _connection(client)["ConnectionArn"]
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        _destination(client, connection_arn=arn.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000")
    with pytest.raises(ClientError) as err:
        _destination(client, connection_arn="arn:aws:events:us-east-1:000000000000:connection/crm")
    assert _code(err) == "ValidationException"


@pytest.mark.parametrize("member, value", [("HttpMethod", "TRACE"), ("HttpMethod", "CONNECT"),
                                           ("InvocationEndpoint", "ftp://example.com/x"),
                                           ("InvocationRateLimitPerSecond", 0)])
def test_a_bad_destination_member_is_a_validation_exception(stack_with_key, client, member, value):
    arn = _connection(client)["ConnectionArn"]
    body = {"Name": "orders", "ConnectionArn": arn, "HttpMethod": "POST", "InvocationEndpoint": "http://127.0.0.1:9/x",
            member: value}
    status, answer = aws(stack_with_key.url, "CreateApiDestination", body)  # botocore would refuse a rate of 0 itself
    assert (status, answer["__type"]) == (400, "ValidationException")
    assert member in answer["message"]
    assert [d["Name"] for d in client.list_api_destinations()["ApiDestinations"]] == ["yaml-dest"]


def test_an_api_destination_name_taken_is_resource_already_exists(client):
    arn = _connection(client)["ConnectionArn"]
    _destination(client, connection_arn=arn)
    for name in ("orders", "yaml-dest"):
        with pytest.raises(client.exceptions.ResourceAlreadyExistsException):
            _destination(client, name, connection_arn=arn)


def test_an_update_changes_only_the_members_it_gives(client):
    arn = _connection(client)["ConnectionArn"]
    _destination(client, connection_arn=arn)
    client.update_api_destination(Name="orders", HttpMethod="PUT")
    described = client.describe_api_destination(Name="orders")
    assert (described["HttpMethod"], described["InvocationEndpoint"]) == ("PUT", "http://127.0.0.1:9/orders/*")
    with pytest.raises(ClientError):
        client.update_api_destination(Name="orders", HttpMethod="TRACE")


def test_a_deleted_api_destination_is_gone_and_unknown_ones_are_resource_not_found(client):
    _destination(client, connection_arn=_connection(client)["ConnectionArn"])
    client.delete_api_destination(Name="orders")
    for call in (client.describe_api_destination, client.delete_api_destination, client.update_api_destination):
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            call(Name="orders")


def test_a_yaml_api_destination_is_read_only(client):
    assert client.describe_api_destination(Name="yaml-dest")["InvocationEndpoint"] == "http://127.0.0.1:9/hook"
    for call in (lambda: client.update_api_destination(Name="yaml-dest", HttpMethod="PUT"),
                 lambda: client.delete_api_destination(Name="yaml-dest")):
        with pytest.raises(client.exceptions.ManagedRuleException):
            call()


def test_a_change_of_destination_or_connection_republishes_the_records_of_its_targets(stack_with_key, client, r):
    arn = _connection(client)["ConnectionArn"]
    _destination(client, connection_arn=arn)
    rule = Rule(name="to-crm", event_pattern={"source": ["x"]}, targets=[HttpTarget(id="t", http="orders")])
    with_client(stack_with_key.redis_url, lambda c: apirules.save(c, rule))
    key = target_key("default", "to-crm", "t")
    wait_for(lambda: r.hget(REGISTRY, key), what="the target's record")
    client.update_api_destination(Name="orders", InvocationEndpoint="http://127.0.0.1:9/v2/*")
    assert decode_record(r.hget(REGISTRY, key)).destination.endpoint == "http://127.0.0.1:9/v2/*"
    client.update_connection(Name="crm", AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "x-other"}})
    assert decode_record(r.hget(REGISTRY, key)).connection.authorization.api_key.header == "x-other"


def test_a_second_broker_sees_an_api_destination_created_on_the_first(stack_with_key, client, events_client):
    stack_with_key.start_broker()
    other = events_client(stack_with_key.url)
    _destination(client, connection_arn=_connection(client)["ConnectionArn"])

    def seen():
        try:
            return other.describe_api_destination(Name="orders")
        except other.exceptions.ResourceNotFoundException:
            return None
    assert wait_for(seen, timeout=5, what="the other broker to see it")["HttpMethod"] == "POST"


# --- secrets stay sealed ---------------------------------------------------------------------

def test_a_secret_never_appears_in_answers_logs_or_a_redis_dump(stack_with_key, client, r):
    answers = [_connection(client, "k", "API_KEY", API_KEY), _connection(client, "b", "BASIC", BASIC),
               _connection(client, "o", "OAUTH_CLIENT_CREDENTIALS", OAUTH)]
    answers += [client.update_connection(Name="b", AuthParameters=BASIC), client.list_connections()]
    answers += [client.describe_connection(Name=n) for n in ("k", "b", "o")]
    _destination(client, connection_arn=answers[0]["ConnectionArn"])
    with_client(stack_with_key.redis_url, lambda c: apirules.save(
        c, Rule(name="r", event_pattern={"source": ["x"]}, targets=[HttpTarget(id="t", http="orders")])))
    wait_for(lambda: r.hget(REGISTRY, target_key("default", "r", "t")), what="the record with the connection")
    text = json.dumps(answers, default=str) + stack_with_key.logs()
    dump = _everything_in(r)
    for secret in SECRETS:
        assert secret not in text
        assert secret.encode() not in dump


def _everything_in(r) -> bytes:
    """Every key's DUMP and its values read back by type: a dump may compress what it holds."""
    out = []
    for key in r.scan_iter(count=1000):
        out.append(r.dump(key) or b"")
        kind = r.type(key).decode()
        if kind == "hash":
            out += [k + v for k, v in r.hgetall(key).items()]
        elif kind == "string":
            out.append(r.get(key))
        elif kind == "stream":
            out += [b"".join(k + v for k, v in fields.items()) for _, fields in r.xrange(key)]
        elif kind == "zset":
            out += r.zrange(key, 0, -1)
        elif kind == "list":
            out += r.lrange(key, 0, -1)
        elif kind == "set":
            out += list(r.smembers(key))
    return b"\n".join(out)


def _stored_connection(r, name: str) -> dict:
    from bus.store.keys import API_CONNECTIONS
    return json.loads(r.hget(API_CONNECTIONS, name))


# --- the store and the live set underneath ----------------------------------------------------

def _api_key_connection(name: str = "crm", description: str = ""):
    from bus.config.model import ApiKeyAuth, Authorization, Connection
    return Connection(name=name, description=description, uuid="u-1",
                      authorization=Authorization(api_key=ApiKeyAuth(header="x-k", value_sealed="sealed")))


def test_an_update_over_a_value_changed_meanwhile_is_a_conflict_and_writes_nothing(redis_url):
    from msgspec.structs import replace

    from bus.store import resources

    async def body(redis):
        first = _api_key_connection()
        await resources.create(redis, first)
        await resources.update(redis, first, replace(first, description="by broker A"))
        with pytest.raises(resources.Conflict):  # broker B still holds `first`
            await resources.update(redis, first, replace(first, description="by broker B"))
        return (await resources.load(redis)).connections["crm"].description
    assert with_client(redis_url, body) == "by broker A"


def test_a_bus_an_api_rule_is_on_is_not_deleted_by_the_store(redis_url):
    from bus.config.model import Bus
    from bus.store import resources

    async def body(redis):
        await resources.create(redis, Bus(name="orders"))
        await apirules.save(redis, Rule(name="r", bus="orders", event_pattern={"source": ["x"]}))
        with pytest.raises(resources.InUse):
            await resources.delete(redis, "bus", "orders")
        return list((await resources.load(redis)).buses)
    assert with_client(redis_url, body) == ["orders"]


def test_after_a_destination_changes_the_router_is_what_a_fresh_one_would_be(redis_url):
    from msgspec.structs import replace

    from bus.broker.live import Broker
    from bus.broker.router import Router
    from bus.config.model import ApiDestination, empty_config
    from bus.config.ruleset import merge
    from bus.store import resources

    async def body(redis):
        broker = Broker(redis, None, empty_config())
        await broker.start()
        connection = _api_key_connection()
        destination = ApiDestination(name="orders", connection="crm", endpoint="http://127.0.0.1:9/a", uuid="d-1")
        await broker.change_resources(lambda: resources.create(redis, connection))
        await broker.change_resources(lambda: resources.create(redis, destination))
        rule = Rule(name="r", event_pattern={"source": ["x"]}, targets=[HttpTarget(id="t", http="orders")])
        await broker.store_api_rule("default", "r", rule)
        moved = replace(destination, endpoint="http://127.0.0.1:9/b")
        await broker.change_resources(lambda: resources.update(redis, destination, moved))
        fresh = Router(merge(broker.declared, broker.api_rules))
        return broker.router.all_targets(), fresh.all_targets()
    held, fresh = with_client(redis_url, body)
    assert held == fresh and held[0].destination.endpoint == "http://127.0.0.1:9/b"


def test_an_event_reaches_an_api_destination_made_through_the_api_with_its_sealed_key(stack_with_key, client):
    from tests.test_http_targets import Receiver
    receiver = Receiver().start()
    try:
        stack_with_key.start_worker()
        connection = _connection(client)
        destination = _destination(client, connection_arn=connection["ConnectionArn"],
                                   InvocationEndpoint=receiver.url + "/orders")
        client.put_rule(Name="to-crm", EventPattern=json.dumps({"source": ["shop"]}))
        client.put_targets(Rule="to-crm", Targets=[{"Id": "t", "Arn": destination["ApiDestinationArn"]}])
        client.put_events(Entries=[{"Source": "shop", "DetailType": "Order", "Detail": '{"id": 7}'}])
        [seen] = receiver.wait_requests(1, timeout=15)
        assert seen["path"] == "/orders" and seen["headers"]["x-api-key"] == "s3cr3t-api-key-value"
        assert json.loads(seen["body"])["detail"] == {"id": 7}
    finally:
        receiver.stop()
    assert "s3cr3t-api-key-value" not in stack_with_key.logs()
