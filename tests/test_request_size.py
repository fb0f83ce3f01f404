"""PutEvents' total-size limit (bus.broker.envelope.check_request) and the bodies too small to
need measuring: no entries a body of at most MAX_REQUEST_BYTES / SIZE_GROWTH holds can be over."""
from __future__ import annotations

import json

import msgspec
import pytest

from bus.broker.envelope import MAX_REQUEST_BYTES, SIZE_GROWTH, RequestError, check_request, entry_size
from bus.broker.routes import native_entries


def numbers_body(size: int, number: str = "1e15") -> bytes:
    """A native body of about `size` bytes whose detail's counted size grows the most (4.5x)."""
    count = size // (len(number) + 1)
    return b'{"source": "s", "detail-type": "d", "detail": {"n": [' + ",".join([number] * count).encode() + b"]}}"


def test_the_worst_growing_body_at_the_unmeasured_size_is_within_the_limit():
    body = numbers_body(MAX_REQUEST_BYTES // SIZE_GROWTH)
    assert len(body) <= MAX_REQUEST_BYTES // SIZE_GROWTH + 100
    assert sum(map(entry_size, native_entries(body))) <= MAX_REQUEST_BYTES


def test_a_body_under_the_limit_whose_entries_are_over_it_is_refused():
    body = numbers_body(300 * 1024)  # 300 KiB of text, counted as ~1.3 MiB
    entries = native_entries(body)
    assert len(body) < MAX_REQUEST_BYTES < sum(map(entry_size, entries))
    with pytest.raises(RequestError, match="over the limit"):
        check_request(entries, body_size=len(body))


def test_a_small_body_is_not_measured_and_passes():
    body = json.dumps([{"source": "s", "detail-type": "d", "detail": {"a": 1}}] * 10).encode()
    check_request(native_entries(body), body_size=len(body))


def test_numbers_grow_at_most_four_and_a_half_times_when_re_encoded():
    for text in (b"1e15", b"9e15", b"1e5", b"1E2", b"1e16", b"123456789e-20"):
        assert len(msgspec.json.encode(msgspec.json.decode(text))) <= 4.5 * len(text)
