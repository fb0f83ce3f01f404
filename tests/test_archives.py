"""Archives through the AWS API, as boto3 calls them, against `bus serve`: what each call answers,
what an archive keeps (its pattern, events no rule matches), and each error in AWS's shape."""
from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from bus.store.keys import archive_bytes_key, archive_events_key
from tests.httpc import aws

YAML = """
buses:
  - {name: shop}
rules:
  - name: orders
    bus: shop
    event_pattern: {source: [orders]}
    targets:
      - {id: t, function: probe.record}
archives:
  - name: yaml-archive
    bus: shop
    retention_days: 30
    description: declared in YAML
"""
SHOP = "arn:aws:events:us-east-1:000000000000:event-bus/shop"


def _code(err: pytest.ExceptionInfo) -> str:
    return err.value.response["Error"]["Code"]


@pytest.fixture
def client(stack, events_client):
    stack.write_rules(YAML)
    stack.start_broker()
    return events_client(stack.url)


def _put(client, source: str, n: int = 1) -> list[str]:
    out = client.put_events(Entries=[{"Source": source, "DetailType": "d", "Detail": json.dumps({"n": i}),
                                      "EventBusName": "shop"} for i in range(n)])
    assert out["FailedEntryCount"] == 0
    return [e["EventId"] for e in out["Entries"]]


def _archived_ids(r, name: str) -> list[str]:
    return sorted(json.loads(m)["id"] for m in r.zrange(archive_events_key(name), 0, -1))


def test_a_created_archive_answers_its_arn_state_and_time(client):
    out = client.create_archive(ArchiveName="all", EventSourceArn=SHOP, RetentionDays=3, Description="everything")
    assert out["ArchiveArn"] == "arn:aws:events:us-east-1:000000000000:archive/all"
    assert out["State"] == "ENABLED"
    assert out["CreationTime"].timestamp() > 0


@pytest.mark.cluster
def test_every_event_of_the_bus_is_archived_whether_or_not_a_rule_matches_it(client, r):
    client.create_archive(ArchiveName="all", EventSourceArn=SHOP)
    ids = _put(client, "orders", 2) + _put(client, "nobody-listens", 3)
    assert _archived_ids(r, "all") == sorted(ids)


def test_an_archive_pattern_keeps_only_the_events_it_matches(client, r):
    client.create_archive(ArchiveName="orders-only", EventSourceArn=SHOP, EventPattern=json.dumps({"source": ["orders"]}))
    kept = _put(client, "orders", 2)
    _put(client, "other", 2)
    assert _archived_ids(r, "orders-only") == sorted(kept)


def test_an_archived_event_is_stored_as_delivered_and_scored_by_its_time(client, r):
    client.create_archive(ArchiveName="all", EventSourceArn=SHOP)
    client.put_events(Entries=[{"Source": "orders", "DetailType": "d", "Detail": "{}", "EventBusName": "shop",
                                "Time": "2026-01-02T03:04:05Z"}])
    [(member, score)] = r.zrange(archive_events_key("all"), 0, -1, withscores=True)
    event = json.loads(member)
    assert event["time"] == "2026-01-02T03:04:05Z" and event["source"] == "orders"
    assert score == 1767323045000


@pytest.mark.cluster
def test_describe_archive_counts_the_events_and_their_bytes(client, r):
    client.create_archive(ArchiveName="all", EventSourceArn=SHOP, EventPattern=json.dumps({"source": ["orders"]}),
                          RetentionDays=7, Description="d")
    _put(client, "orders", 3)
    out = client.describe_archive(ArchiveName="all")
    assert out["EventCount"] == 3
    assert out["SizeBytes"] == sum(len(m) for m in r.zrange(archive_events_key("all"), 0, -1)) > 0
    assert (out["ArchiveName"], out["EventSourceArn"], out["State"], out["RetentionDays"], out["Description"]) == (
        "all", SHOP, "ENABLED", 7, "d")
    assert json.loads(out["EventPattern"]) == {"source": ["orders"]}


def test_list_archives_shows_yaml_and_api_archives_and_filters_them(client):
    client.create_archive(ArchiveName="api-one", EventSourceArn=SHOP)
    client.create_archive(ArchiveName="on-default", EventSourceArn="arn:aws:events:us-east-1:000000000000:event-bus/default")
    names = [a["ArchiveName"] for a in client.list_archives()["Archives"]]
    assert names == ["api-one", "on-default", "yaml-archive"]
    assert [a["ArchiveName"] for a in client.list_archives(NamePrefix="api")["Archives"]] == ["api-one"]
    assert [a["ArchiveName"] for a in client.list_archives(EventSourceArn=SHOP)["Archives"]] == ["api-one", "yaml-archive"]
    page = client.list_archives(Limit=2)
    assert len(page["Archives"]) == 2 and client.list_archives(NextToken=page["NextToken"])["Archives"][0]["ArchiveName"] == "yaml-archive"


def test_update_archive_changes_the_pattern_and_retention(client, r):
    client.create_archive(ArchiveName="a", EventSourceArn=SHOP, EventPattern=json.dumps({"source": ["orders"]}))
    client.update_archive(ArchiveName="a", EventPattern=json.dumps({"source": ["other"]}), RetentionDays=2)
    kept = _put(client, "other")
    _put(client, "orders")
    assert _archived_ids(r, "a") == kept
    assert client.describe_archive(ArchiveName="a")["RetentionDays"] == 2


@pytest.mark.cluster
def test_delete_archive_deletes_its_events(client, r):
    client.create_archive(ArchiveName="a", EventSourceArn=SHOP)
    _put(client, "orders")
    client.delete_archive(ArchiveName="a")
    assert not r.exists(archive_events_key("a"), archive_bytes_key("a"))
    with pytest.raises(ClientError) as err:
        client.describe_archive(ArchiveName="a")
    assert _code(err) == "ResourceNotFoundException"


def test_a_yaml_archive_is_described_but_read_only(client):
    assert client.describe_archive(ArchiveName="yaml-archive")["Description"] == "declared in YAML"
    for call in (lambda: client.update_archive(ArchiveName="yaml-archive", RetentionDays=1),
                 lambda: client.delete_archive(ArchiveName="yaml-archive")):
        with pytest.raises(ClientError) as err:
            call()
        assert _code(err) == "ManagedRuleException"


def test_a_taken_name_is_resource_already_exists(client):
    client.create_archive(ArchiveName="a", EventSourceArn=SHOP)
    for name in ("a", "yaml-archive"):
        with pytest.raises(ClientError) as err:
            client.create_archive(ArchiveName=name, EventSourceArn=SHOP)
        assert _code(err) == "ResourceAlreadyExistsException"


@pytest.mark.parametrize("call", ["describe_archive", "update_archive", "delete_archive"])
def test_an_unknown_archive_is_resource_not_found(client, call):
    with pytest.raises(ClientError) as err:
        getattr(client, call)(ArchiveName="nope")
    assert _code(err) == "ResourceNotFoundException"


def test_an_archive_on_an_unknown_bus_is_resource_not_found(client):
    with pytest.raises(ClientError) as err:
        client.create_archive(ArchiveName="a", EventSourceArn="arn:aws:events:us-east-1:000000000000:event-bus/nope")
    assert _code(err) == "ResourceNotFoundException"


def test_an_event_source_that_is_not_a_bus_arn_is_a_validation_error(client):
    with pytest.raises(ClientError) as err:
        client.create_archive(ArchiveName="a", EventSourceArn="shop")
    assert _code(err) == "ValidationException"


def test_an_invalid_pattern_is_invalid_event_pattern(client):
    with pytest.raises(ClientError) as err:
        client.create_archive(ArchiveName="a", EventSourceArn=SHOP, EventPattern=json.dumps({"source": "orders"}))
    assert _code(err) == "InvalidEventPatternException"


@pytest.mark.parametrize("args", [{"ArchiveName": "bad name"}, {"ArchiveName": "a", "KmsKeyIdentifier": "k"},
                                  {"ArchiveName": "a", "Description": "x" * 513}])
def test_bad_members_are_validation_errors(client, args):
    with pytest.raises(ClientError) as err:
        client.create_archive(EventSourceArn=SHOP, **args)
    assert _code(err) == "ValidationException"


def test_list_archives_with_an_unknown_state_is_a_validation_error(client):
    with pytest.raises(ClientError) as err:
        client.list_archives(State="invalid")
    assert _code(err) == "ValidationException"


def test_a_negative_retention_is_a_validation_error(client, stack):
    # botocore refuses it before sending; another client may not
    status, body = aws(stack.url, "CreateArchive", {"ArchiveName": "a", "EventSourceArn": SHOP, "RetentionDays": -1})
    assert (status, body["__type"]) == (400, "ValidationException")


def test_a_second_broker_archives_into_an_archive_made_on_the_first(client, stack, events_client, r):
    from tests.conftest import wait_for
    client.create_archive(ArchiveName="all", EventSourceArn=SHOP)
    first = stack.port
    stack.start_broker()  # a second broker: it loads the stored archive at start
    other = events_client(stack.url)
    ids = _put(other, "orders")
    assert _archived_ids(r, "all") == ids
    stack.port = first
    wait_for(lambda: client.describe_archive(ArchiveName="all")["EventCount"] == 1, what="count")


@pytest.mark.cluster
def test_bus_archive_list_and_show_read_the_archives_and_their_counts(client, stack):
    client.create_archive(ArchiveName="api-one", EventSourceArn=SHOP, RetentionDays=3)
    _put(client, "orders", 2)
    listing = stack.bus("archive", "list", "--rules", str(stack.rules_dir))
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].startswith("api-one  bus=shop  events=2  bytes=") and "retention=3d" in lines[0]
    assert lines[1].startswith("yaml-archive  bus=shop  events=2")  # it keeps every event of shop too
    shown = stack.bus("archive", "show", "api-one")
    assert json.loads(shown.stdout)["EventCount"] == 2
    missing = stack.bus("archive", "show", "nope")
    assert missing.returncode == 1 and "no archive nope" in missing.stderr
