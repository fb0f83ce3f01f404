"""Random (version 4) UUID strings for event ids and request ids, made cheaply.

The broker makes two per event (the event id and its delivery's request id); uuid.uuid4()
builds a UUID object just to print it. Here the hex digits are cut from os.urandom directly,
with the version digit set to 4 and the variant digit to one of 8, 9, a, b (RFC 4122). They are
made 256 at a time from one urandom call (a fifth of the cost of one each), and a forked child
drops the ones its parent had made, so no two processes hand out the same id.
"""
from __future__ import annotations

import hashlib
import os

_VARIANT = "89ab89ab89ab89ab"  # the variant digit for each value of the 4 random bits under it
_VARIANT_OF = {digit: _VARIANT[int(digit, 16)] for digit in "0123456789abcdef"}
_BATCH = 256
_made: list[str] = []  # ids made and not yet handed out
os.register_at_fork(after_in_child=_made.clear)


def new_id() -> str:
    """A random UUID in its canonical form, as str(uuid.uuid4()) gives."""
    if not _made:
        h = os.urandom(16 * _BATCH).hex()
        _made.extend(f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{_VARIANT_OF[h[i + 16]]}{h[i + 17:i + 20]}"
                     f"-{h[i + 20:i + 32]}" for i in range(0, 32 * _BATCH, 32))
    return _made.pop()


def derived_id(name: str, n: int) -> str:
    """A UUID-shaped id made from `name` and `n`, the same every time: the EventId of the n-th
    entry of a request its client names `name`, so that its retries answer the ids it would have
    got (a version-4-shaped string, as EventBridge's ids look)."""
    h = hashlib.blake2b(f"{n}/{name}".encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"
