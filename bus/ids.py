"""Random (version 4) UUID strings for event ids and request ids, made cheaply.

The broker makes two per event (the event id and its delivery's request id); uuid.uuid4()
builds a UUID object just to print it. Here the hex digits are cut from os.urandom directly,
with the version digit set to 4 and the variant digit to one of 8, 9, a, b (RFC 4122).
"""
from __future__ import annotations

import hashlib
import os

_VARIANT = "89ab89ab89ab89ab"


def new_id() -> str:
    """A random UUID in its canonical form, as str(uuid.uuid4()) gives."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"


def derived_id(name: str, n: int) -> str:
    """A UUID-shaped id made from `name` and `n`, the same every time: the EventId of the n-th
    entry of a request its client names `name`, so that its retries answer the ids it would have
    got (a version-4-shaped string, as EventBridge's ids look)."""
    h = hashlib.blake2b(f"{n}/{name}".encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"
