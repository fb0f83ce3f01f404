"""POST /events bodies decode into entries by a typed fast path or the general one: both must
give ingest the same entries, and every fault must still be named by the general path."""
from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from bus.broker import routes
from bus.broker.envelope import MAX_JSON_DEPTH, RequestError

ATTRS = ("source", "detail_type", "detail", "resources", "time", "bus", "id", "size")
KEYS = ["source", "detail-type", "detail", "resources", "time", "bus", "version", "id", "account", "region"]
json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                           max_leaves=6)
items = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=len(KEYS))


def _seen(entry) -> tuple:
    return (*(getattr(entry, a) for a in ATTRS), dict(entry.extra))


@settings(max_examples=200, deadline=None)
@given(st.one_of(items, st.lists(items, max_size=4)))
def test_typed_and_general_paths_give_the_same_entries(body):
    raw = json.dumps(body).encode()
    assert [_seen(e) for e in routes.native_entries(raw)] == [_seen(e) for e in routes._general_entries(raw)]


def test_the_common_body_takes_the_typed_path():
    raw = json.dumps([{"source": "a", "detail-type": "b", "detail": {}}] * 3).encode()
    assert all(isinstance(e, routes._NativeEntry) for e in routes.native_entries(raw))


def test_a_reposted_events_id_is_not_kept():
    [entry] = routes.native_entries(b'{"source": "a", "detail-type": "b", "detail": {}, "id": "mine"}')
    assert entry.id is None


def test_unknown_keys_are_named_per_entry():
    entries = routes.native_entries(b'[{"source": "a"}, {"source": "a", "zz": 1, "aa": 2}]')
    assert [dict(e.extra) for e in entries] == [{}, {"unknown": ["aa", "zz"]}]


@pytest.mark.parametrize("raw, message", [
    (b"[1]", "Each event must be a JSON object."),
    (b"not json", "Request body is not valid JSON"),
    (b'{"detail": ' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1) + b"}", "nested deeper"),
])
def test_faults_are_answered_by_the_general_path(raw, message):
    with pytest.raises(RequestError) as caught:
        routes.native_entries(raw)
    assert caught.value.type == "SerializationException" and message in caught.value.message


def test_duplicate_keys_keep_the_last_value_on_both_paths():
    raw = b'{"source": "first", "source": "last"}'
    assert routes.native_entries(raw)[0].source == routes._general_entries(raw)[0].source == "last"
    assert msgspec.json.decode(raw)["source"] == "last"
