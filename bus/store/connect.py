"""Redis clients for busway's processes: redis-py's asyncio client with hiredis packing commands.

redis-py parses replies with hiredis but packs commands in Python for asyncio connections;
for the broker's XADDs of ~1 KB events that was a quarter of its ingest CPU. Arguments are
still encoded by redis-py's own encoder, so what reaches Redis is byte-for-byte the same.
"""
from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from hiredis import pack_command as _hiredis_pack  # redis[hiredis] is a dependency
from redis.asyncio.connection import Connection

_PLAIN = frozenset((bytes, str, int))  # encoded by hiredis exactly as redis-py would (str as UTF-8)


class HiredisPackingConnection(Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):  # "XINFO CONSUMERS": Redis wants the words as separate arguments
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        if not all(type(arg) in _PLAIN for arg in args):  # floats, memoryviews, bad types: redis-py's rules
            args = tuple(map(self.encoder.encode, args))
        return [_hiredis_pack(args)]


def connect(url: str, **kwargs: Any) -> aioredis.Redis:
    """An asyncio Redis client for `url` (redis://, rediss:// or unix://)."""
    if url.startswith("redis://"):  # TLS and unix sockets keep redis-py's own connection classes
        kwargs.setdefault("connection_class", HiredisPackingConnection)
    return aioredis.from_url(url, **kwargs)
