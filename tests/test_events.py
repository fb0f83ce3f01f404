"""Every event busway makes has EventBridge's envelope: the same keys in the same order."""
from datetime import datetime, timezone
from types import SimpleNamespace

import msgspec

from bus.broker.envelope import Entry, build_envelope
from bus.config.model import Rule
from bus.events import format_time, new_event
from bus.identity import Identity
from bus.scheduler.event import scheduled_event
from bus.worker.destinations import invocation_record

WHO = Identity(account="123456789012", region="eu-west-1")
KEYS = ["version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"]


def test_new_event_has_eventbridges_keys_in_order_and_a_fresh_id():
    a = new_event(WHO, "shop", "Order", "2030-01-01T00:00:00Z", ["r"], {"n": 1})
    b = new_event(WHO, "shop", "Order", "2030-01-01T00:00:00Z", ["r"], {"n": 1})
    assert list(a) == KEYS and a["id"] != b["id"]
    assert {k: a[k] for k in KEYS if k != "id"} == {
        "version": "0", "detail-type": "Order", "source": "shop", "account": "123456789012",
        "time": "2030-01-01T00:00:00Z", "region": "eu-west-1", "resources": ["r"], "detail": {"n": 1}}


def test_event_time_is_utc_whole_seconds():
    assert format_time(1893456000.9) == "2030-01-01T00:00:00Z"


def test_a_put_events_entry_becomes_such_an_event():
    event = build_envelope(Entry(source="shop", detail_type="Order", detail='{"n": 1}'), WHO, 1893456000.0)
    assert list(event) == KEYS and (event["account"], event["time"]) == ("123456789012", "2030-01-01T00:00:00Z")


def test_a_scheduled_event_is_such_an_event_with_the_rule_arn():
    event = scheduled_event(Rule(name="n", schedule="rate(1 hour)"), datetime(2030, 1, 1, tzinfo=timezone.utc), WHO)
    assert list(event) == KEYS
    assert event["resources"] == ["arn:aws:events:eu-west-1:123456789012:rule/n"]


def test_a_scheduled_event_of_another_bus_names_its_rule_with_the_bus():
    event = scheduled_event(Rule(name="n", bus="shop", schedule="rate(1 hour)"),
                            datetime(2030, 1, 1, tzinfo=timezone.utc), Identity("123456789012", "eu-west-1"))
    assert event["resources"] == ["arn:aws:events:eu-west-1:123456789012:rule/shop/n"]


def test_a_destination_record_is_such_an_event_from_lambda():
    d = SimpleNamespace(id="req-1", event=b'{"id": "e"}')  # the two fields a record reads of its Delivery
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:m.f"
    item = msgspec.json.decode(invocation_record(d, function_arn=arn, account=WHO.account, region=WHO.region,
                                                 condition="Success", attempts=1, response={"ok": 1}, error=None,
                                                 to_bus="results"))
    event = item["event"]
    assert item["bus"] == "results" and list(event) == KEYS
    assert (event["source"], event["detail-type"], event["resources"]) == (
        "lambda", "Lambda Function Invocation Result - Success", [arn])
    assert event["detail"]["responsePayload"] == {"ok": 1}
