"""A broker started on a Redis an older busway wrote renames its keys to this version's names."""
from __future__ import annotations

import pytest

from bus.store.keys import API_RULES, API_VERSION, INBOX, LEGACY_NAMES, PROGRESS_KEY
from bus.store.migrate import rename_legacy_keys
from tests.conftest import with_client


def test_old_key_names_are_renamed_to_the_new_ones_with_their_values(redis_url, r):
    r.hset("busway:api:rules", "default/r1", b'{"name":"r1"}')
    r.set("busway:api:version", 7)
    r.hset("busway:scheduler:progress", "default/tick", b"{}")
    r.xadd("busway:inbox", {"d": b"item"})
    renamed = with_client(redis_url, rename_legacy_keys)
    assert set(renamed) == {API_RULES, API_VERSION, PROGRESS_KEY, INBOX}
    assert r.hget(API_RULES, "default/r1") == b'{"name":"r1"}' and r.get(API_VERSION) == b"7"
    assert r.xlen(INBOX) == 1
    assert not any(r.exists(old) for old in LEGACY_NAMES)


def test_a_new_name_that_exists_already_is_kept_and_the_old_key_left_alone(redis_url, r):
    r.set("busway:api:version", 7)
    r.set(API_VERSION, 9)  # a newer broker wrote it meanwhile
    assert with_client(redis_url, rename_legacy_keys) == []
    assert r.get(API_VERSION) == b"9" and r.get("busway:api:version") == b"7"


@pytest.mark.parametrize("name", sorted(LEGACY_NAMES))
def test_every_old_name_maps_to_a_name_with_a_hash_tag(name):
    new = LEGACY_NAMES[name]
    assert new != name and "{" in new and "}" in new
