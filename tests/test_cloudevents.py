"""CloudEvents in: POST /cloudevents[/{bus}] in binary, structured and batched mode, sent by the
official `cloudevents` SDK (2.2.0: it has no batch helper, so a batch is the JSON array of the
SDK's structured events) to a real broker; handlers record what a worker gave them."""
from __future__ import annotations

import http.client
import json
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from cloudevents.core.bindings.http import HTTPMessage, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v03.event import CloudEvent as CloudEventV03
from cloudevents.core.v1.event import CloudEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.local.redisproc import RedisProcess
from tests.conftest import Stack, wait_for
from tests.httpc import post

FORMAT = JSONFormat()
BATCH = "application/cloudevents-batch+json"
RULES = """
buses:
  - name: shop
functions:
  probe.record: {}
rules:
  - name: created
    event_pattern: {source: [/orders], detail-type: [order.created]}
    targets: [{id: t, function: probe.record}]
  - name: cancelled
    event_pattern: {source: [/orders], detail-type: [order.cancelled]}
    targets: [{id: t, function: probe.record}]
  - name: on-shop
    bus: shop
    event_pattern: {source: [/orders]}
    targets: [{id: t, function: probe.record}]
"""


def cloud_event(data=None, **attributes) -> CloudEvent:
    """An order event; with data, typed application/json (urllib would otherwise send its own
    Content-Type, form-urlencoded, for a binary-mode body the SDK left untyped)."""
    typed = {"datacontenttype": "application/json"} if data is not None else {}
    return CloudEvent({"source": "/orders", "type": "order.created", **typed, **attributes}, data)


def send(url: str, message: HTTPMessage) -> tuple[int, dict]:
    return post(url, message.body, message.headers)


def batch(*events: CloudEvent) -> HTTPMessage:
    body = b"[" + b",".join(FORMAT.write(e) for e in events) + b"]"
    return HTTPMessage(headers={"content-type": BATCH}, body=body)


def structured_json(event: CloudEvent, **changes) -> HTTPMessage:
    """The SDK's structured event with attributes changed (None: removed) where the SDK refuses to."""
    document = json.loads(FORMAT.write(event))
    for name, value in changes.items():
        if value is None:
            document.pop(name, None)
        else:
            document[name] = value
    return HTTPMessage(headers={"content-type": "application/cloudevents+json"}, body=json.dumps(document).encode())


@pytest.fixture
def delivering(stack):
    stack.write_rules(RULES)
    stack.start_broker()
    stack.start_worker()
    return stack


@pytest.fixture(scope="module")
def broker(redis_server, tmp_path_factory):
    """One broker, no worker, for the answers alone (nothing here waits on a delivery)."""
    s = Stack(redis_server.url, tmp_path_factory.mktemp("cloudevents"))
    s.write_rules(RULES)
    s.start_broker()
    yield s
    s.stop()


def handled(stack: Stack, n: int) -> list[dict]:
    return stack.wait_records(n)


# --- the three modes, end to end ----------------------------------------------------------

def test_a_binary_mode_event_is_handled_as_the_eventbridge_event_it_maps_to(delivering):
    event = cloud_event({"order": 7}, id="order-7", subject="orders/7",
                        time=datetime(2026, 3, 1, 12, 30, 5, 250000, tzinfo=timezone(timedelta(hours=2))))
    status, body = send(delivering.url + "/cloudevents", to_binary(event, FORMAT))
    assert (status, body) == (200, {"id": "order-7"})
    [call] = handled(delivering, 1)
    seen = call["event"]
    assert {k: seen[k] for k in ("id", "source", "detail-type", "time", "resources", "detail")} == {
        "id": "order-7", "source": "/orders", "detail-type": "order.created",
        "time": "2026-03-01T10:30:05Z", "resources": ["orders/7"], "detail": {"order": 7}}
    assert call["context"]["rule_name"] == "created"


def test_a_structured_mode_event_is_handled_with_its_id_and_data(delivering):
    event = cloud_event({"order": 8}, id="order-8")
    status, body = send(delivering.url + "/cloudevents", to_structured(event, FORMAT))
    assert (status, body) == (200, {"id": "order-8"})
    [call] = handled(delivering, 1)
    assert (call["event"]["id"], call["event"]["detail"], call["event"]["resources"]) == ("order-8", {"order": 8}, [])


def test_a_batch_answers_putevents_shape_and_each_event_goes_to_the_rule_of_its_type(delivering):
    events = [cloud_event({"n": 1}, id="b-1"), cloud_event({"n": 2}, id="b-2", type="order.cancelled")]
    status, body = send(delivering.url + "/cloudevents", batch(*events))
    assert (status, body) == (200, {"FailedEntryCount": 0, "Entries": [{"EventId": "b-1"}, {"EventId": "b-2"}]})
    calls = handled(delivering, 2)
    assert sorted((c["event"]["id"], c["context"]["rule_name"]) for c in calls) == [("b-1", "created"),
                                                                                    ("b-2", "cancelled")]


def test_an_event_on_a_named_bus_goes_to_that_bus_rules_only(delivering):
    status, _ = send(delivering.url + "/cloudevents/shop", to_binary(cloud_event({}, id="s-1"), FORMAT))
    assert status == 200
    [call] = handled(delivering, 1)
    assert call["context"]["rule_name"] == "on-shop"


def test_an_event_without_data_has_an_empty_detail(delivering):
    status, _ = send(delivering.url + "/cloudevents", to_binary(cloud_event(id="no-data"), FORMAT))
    assert status == 200
    assert handled(delivering, 1)[0]["event"]["detail"] == {}


def test_dataschema_and_extension_attributes_are_dropped_from_the_event(delivering):
    event = cloud_event({"k": 1}, id="ext", dataschema="https://example.com/order.json", traceparent="00-abc-01",
                        tenant="acme")
    status, _ = send(delivering.url + "/cloudevents", to_binary(event, FORMAT))
    assert status == 200
    seen = handled(delivering, 1)[0]["event"]
    assert set(seen) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
    assert "acme" not in json.dumps(seen) and "order.json" not in json.dumps(seen)


def test_binary_header_values_are_percent_decoded(delivering):
    # The SDK percent-encodes the subject's space, quote, percent and non-ASCII; resources hold it decoded.
    subject = 'orders/ä 7 "x" 100%'
    message = to_binary(cloud_event({}, id="pct", subject=subject), FORMAT)
    assert "%25" in message.headers["ce-subject"]
    assert send(delivering.url + "/cloudevents", message)[0] == 200
    assert handled(delivering, 1)[0]["event"]["resources"] == [subject]


# --- answers (one broker, no worker) ------------------------------------------------------

def test_a_bus_arn_in_the_path_names_the_bus(broker):
    arn = quote("arn:aws:events:us-east-1:123456789012:event-bus/shop", safe="")
    status, body = send(f"{broker.url}/cloudevents/{arn}", to_binary(cloud_event({}, id="arn-1"), FORMAT))
    assert (status, body) == (200, {"id": "arn-1"})


@pytest.mark.parametrize("missing", ["id", "source", "specversion", "type"])
def test_a_structured_event_missing_a_required_attribute_is_a_400_naming_it(broker, missing):
    status, body = send(broker.url + "/cloudevents", structured_json(cloud_event({}), **{missing: None}))
    assert (status, body["__type"]) == (400, "InvalidArgument")
    assert f"attribute(s) {missing} " in body["message"]


def test_a_binary_request_without_ce_headers_is_a_400_naming_every_missing_attribute(broker):
    status, body = post(broker.url + "/cloudevents", b'{"a": 1}', {"Content-Type": "application/json"})
    assert (status, body["__type"]) == (400, "InvalidArgument")
    assert "id, source, specversion, type" in body["message"] and "ce-* headers" in body["message"]


def test_specversion_0_3_is_unsupported(broker):
    event = CloudEventV03({"id": "old", "source": "/orders", "type": "order.created"}, {"a": 1})
    status, body = send(broker.url + "/cloudevents", to_binary(event, FORMAT))
    assert (status, body["__type"]) == (400, "InvalidArgument")
    assert "Unsupported CloudEvents specversion '0.3'" in body["message"]


def test_a_structured_body_that_is_not_json_is_a_400_serialization_exception(broker):
    status, body = post(broker.url + "/cloudevents", b'{"id": ', {"Content-Type": "application/cloudevents+json"})
    assert (status, body["__type"]) == (400, "SerializationException")


def test_binary_data_that_is_not_json_is_a_400(broker):
    status, body = post(broker.url + "/cloudevents", b'{"a": ', dict(to_binary(cloud_event(), FORMAT).headers,
                                                                     **{"content-type": "application/json"}))
    assert (status, body) == (400, {"__type": "MalformedDetail", "message": "data is not valid JSON."})


def test_a_non_json_datacontenttype_is_a_400_naming_it(broker):
    event = cloud_event("plain words", datacontenttype="text/plain")
    status, body = send(broker.url + "/cloudevents", to_binary(event, FORMAT))
    assert (status, body["__type"]) == (400, "MalformedDetail")
    assert "datacontenttype text/plain is not JSON" in body["message"]


@pytest.mark.parametrize("data, kind", [([1, 2], "an array"), ("text", "a string"), (3, "a number")])
def test_data_that_is_json_but_not_an_object_is_a_400(broker, data, kind):
    status, body = send(broker.url + "/cloudevents", structured_json(cloud_event({}), data=data))
    assert (status, body["__type"]) == (400, "MalformedDetail")
    assert body["message"].endswith(f"not {kind}.")


def test_data_base64_is_a_400(broker):
    event = cloud_event(b"\x00\x01binary", datacontenttype="application/octet-stream")
    message = to_structured(event, FORMAT)
    assert b"data_base64" in message.body
    status, body = send(broker.url + "/cloudevents", message)
    assert (status, body["__type"]) == (400, "MalformedDetail")
    assert "data_base64" in body["message"]


@pytest.mark.parametrize("time", ["yesterday", "2026-02-30T10:00:00Z", "2026-03-01 10:00:00Z", "2026-03-01T10:00:00"])
def test_a_time_that_is_not_rfc3339_is_a_400(broker, time):
    status, body = send(broker.url + "/cloudevents", structured_json(cloud_event({}), time=time))
    assert (status, body["__type"]) == (400, "InvalidArgument")
    assert "attribute time is not valid" in body["message"]


def test_ce_datacontenttype_in_binary_mode_is_a_400(broker):
    headers = dict(to_binary(cloud_event({}), FORMAT).headers, **{"ce-datacontenttype": "application/json"})
    status, body = post(broker.url + "/cloudevents", b"{}", headers)
    assert (status, body["__type"]) == (400, "InvalidArgument")


def test_a_structured_event_in_another_format_is_a_415(broker):
    status, body = post(broker.url + "/cloudevents", b"<event/>", {"Content-Type": "application/cloudevents+xml"})
    assert (status, body["__type"]) == (415, "UnsupportedMediaType")


def test_an_event_for_an_unknown_bus_is_a_404_resource_not_found(broker):
    status, body = send(broker.url + "/cloudevents/nope", to_binary(cloud_event({}), FORMAT))
    assert (status, body) == (404, {"__type": "ResourceNotFoundException", "message": "Event bus nope does not exist."})


def test_an_empty_batch_is_answered_with_zero_entries(broker):
    assert send(broker.url + "/cloudevents", batch()) == (200, {"FailedEntryCount": 0, "Entries": []})


def test_a_batch_over_ten_events_is_refused_whole(broker):
    status, body = send(broker.url + "/cloudevents", batch(*(cloud_event({}) for _ in range(11))))
    assert (status, body["__type"]) == (400, "ValidationException")
    assert "at most 10 events, not 11" in body["message"]


def test_a_batch_that_is_not_an_array_is_a_400(broker):
    status, body = post(broker.url + "/cloudevents", b'{"id": "x"}', {"Content-Type": BATCH})
    assert (status, body["__type"]) == (400, "SerializationException")


def test_a_bad_event_in_a_batch_fails_alone_in_its_place(broker):
    good = cloud_event({"n": 1}, id="ok-1")
    bad = json.loads(FORMAT.write(cloud_event({"n": 2}, id="bad")))
    bad["specversion"] = "2.0"
    body = b"[" + FORMAT.write(good) + b"," + json.dumps(bad).encode() + b", 5]"
    status, answer = post(broker.url + "/cloudevents", body, {"Content-Type": BATCH})
    assert status == 200 and answer["FailedEntryCount"] == 2
    assert answer["Entries"][0] == {"EventId": "ok-1"}
    assert [e["ErrorCode"] for e in answer["Entries"][1:]] == ["InvalidArgument", "InvalidArgument"]


def test_a_batch_for_an_unknown_bus_fails_each_entry(broker):
    status, body = send(broker.url + "/cloudevents/nope", batch(cloud_event({}), cloud_event({})))
    assert (status, body["FailedEntryCount"]) == (200, 2)
    assert {e["ErrorCode"] for e in body["Entries"]} == {"ResourceNotFoundException"}


def test_events_over_putevents_size_limit_are_refused_whole(broker):
    events = [cloud_event({"pad": "x" * 300_000}) for _ in range(4)]  # 1.2 MB: over 1 MiB, under the 4 MiB body cap
    status, body = send(broker.url + "/cloudevents", batch(*events))
    assert (status, body["__type"]) == (400, "ValidationException")


def test_an_aws_source_is_refused_as_putevents_refuses_it(broker):
    status, body = send(broker.url + "/cloudevents", to_binary(cloud_event({}, source="aws.s3"), FORMAT))
    assert (status, body["__type"]) == (400, "NotAuthorizedForSourceException")


def test_a_header_that_is_not_utf8_once_decoded_is_a_400(broker):
    for raw in (b"%FF%FE", b"\xff\xfe"):  # percent-encoded, and raw bytes on the wire
        host, port = broker.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = dict(to_binary(cloud_event({}), FORMAT).headers, **{"ce-subject": raw, "content-type": "application/json"})
        conn.request("POST", "/cloudevents", body=b"{}", headers=headers)
        response = conn.getresponse()
        body = json.loads(response.read())
        conn.close()
        assert (response.status, body["__type"]) == (400, "InvalidArgument"), raw
        assert "ce-subject is not valid UTF-8" in body["message"]


ATTRIBUTE = st.one_of(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
                      st.sampled_from(["1.0", "0.3", "%FF", "%", "\"%41\"", "2026-03-01T10:00:00Z", "aws.x"]))
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)
STRUCTURED = st.dictionaries(st.sampled_from(["id", "source", "specversion", "type", "time", "subject", "data",
                                              "data_base64", "datacontenttype", "dataschema", "ext"]),
                             st.one_of(ATTRIBUTE, JSON_VALUES), max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=st.dictionaries(st.sampled_from(["ce-id", "ce-source", "ce-specversion", "ce-type", "ce-time",
                                                "ce-subject", "ce-datacontenttype", "ce-x"]), ATTRIBUTE, max_size=7),
       content_type=st.sampled_from(["application/json", "text/plain", "application/cloudevents+json",
                                     BATCH, "application/cloudevents+xml", "APPLICATION/JSON; charset=utf-8"]),
       body=st.one_of(STRUCTURED.map(json.dumps), st.lists(STRUCTURED, max_size=3).map(json.dumps),
                      JSON_VALUES.map(json.dumps), st.binary(max_size=30).map(lambda b: b.decode("latin-1"))),
       path=st.sampled_from(["/cloudevents", "/cloudevents/shop", "/cloudevents/nope", "/cloudevents/%3A"]))
def test_no_cloudevents_request_answers_5xx(broker, headers, content_type, body, path):
    status, answer = post(broker.url + path, body.encode("utf-8", "surrogateescape"),
                          {**headers, "Content-Type": content_type})
    assert status < 500, (headers, content_type, body, answer)
    assert ("__type" in answer) if status >= 400 else ("id" in answer or "Entries" in answer)


# --- auth and durability ------------------------------------------------------------------

CREDENTIALS = """\
principals:
  - name: shop
    access_key_id: AKIASHOP00000001
    secret_access_key: shop-secret
    token: shop-token-0123456789
    buses: [shop]
"""
BEARER = {"Authorization": "Bearer shop-token-0123456789"}


def test_a_principal_limited_to_one_bus_is_refused_per_entry_on_another(stack, tmp_path):
    (tmp_path / "credentials.yaml").write_text(CREDENTIALS)
    stack.write_rules(RULES)
    stack.start_broker(extra=("--credentials", str(tmp_path / "credentials.yaml")))
    single = to_binary(cloud_event({}, id="mine"), FORMAT)
    assert post(stack.url + "/cloudevents/shop", single.body, {**single.headers, **BEARER}) == (200, {"id": "mine"})
    status, body = post(stack.url + "/cloudevents", single.body, {**single.headers, **BEARER})
    assert (status, body["__type"]) == (403, "AccessDeniedException")
    assert "event-bus/default" in body["message"]
    many = batch(cloud_event({}), cloud_event({}))
    status, body = post(stack.url + "/cloudevents/default", many.body, {**many.headers, **BEARER})
    assert (status, body["FailedEntryCount"]) == (200, 2)
    assert {e["ErrorCode"] for e in body["Entries"]} == {"AccessDeniedException"}
    status, body = post(stack.url + "/cloudevents/shop", single.body, single.headers)  # no token at all
    assert (status, body["__type"]) == (400, "MissingAuthenticationTokenException")


def test_a_redis_outage_answers_500_internal_exception_and_no_id(tmp_path):
    redis = RedisProcess(tmp_path / "redis", fsync="always").start()
    stack = Stack(redis.url, tmp_path)
    try:
        stack.write_rules(RULES)
        stack.start_broker()
        assert send(stack.url + "/cloudevents", to_binary(cloud_event({}, id="before"), FORMAT))[0] == 200
        redis.kill()
        status, body = wait_for(lambda: (a := send(stack.url + "/cloudevents", to_binary(cloud_event({}), FORMAT)))[0] != 200
                                and a, what="an answer while Redis is down")
        assert (status, body["__type"]) == (500, "InternalException")
    finally:
        stack.stop()
        redis.stop()

