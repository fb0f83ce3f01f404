"""busway's Redis connections pack commands with hiredis, byte-for-byte as redis-py would."""
from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from bus.store.connect import HiredisPackingConnection, connect
from bus.store.keys import stream_key

COMMANDS = [
    ("XADD", stream_key("default/r/t"), "*", "d", b"x" * 1100),
    ("SET", "k", 12), ("SET", "k", -2**70), ("SET", "k", 1.5), ("SET", "k", 3.25e10),
    ("SET", "k", "h\u00e9llo \u2603"), ("SET", "k", memoryview(b"abc")), ("SET", "k", b"y" * 100_000),
    ("XINFO CONSUMERS", "stream", "group"), (b"XINFO CONSUMERS", b"stream", "group"),
    ("EVALSHA", "abc", 2, "k1", "k2", 0, -1, b"", ""),
]


def _id(command) -> str:
    """A test id that is the same in every process (a memoryview's repr holds its address)."""
    return " ".join("<memoryview>" if isinstance(c, memoryview) else str(c) for c in command)[:40]


@pytest.mark.parametrize("command", COMMANDS, ids=_id)
def test_packed_bytes_equal_redis_py_packing(command):
    ours = b"".join(HiredisPackingConnection().pack_command(*command))
    theirs = b"".join(bytes(chunk) for chunk in Connection().pack_command(*command))
    assert ours == theirs


@pytest.mark.parametrize("bad", [None, True, object()], ids=["None", "True", "object"])
def test_arguments_redis_py_rejects_are_rejected(bad):
    with pytest.raises(DataError):
        HiredisPackingConnection().pack_command("SET", "k", bad)


def test_values_round_trip_through_a_real_redis(redis_url):
    async def main():
        client = connect(redis_url)
        try:
            assert isinstance(client.connection_pool.connection_kwargs, dict)
            assert client.connection_pool.connection_class is HiredisPackingConnection
            await client.set("t:text", "h\u00e9llo")
            await client.xadd("t:stream", {"d": b"\x00\xff" * 600})
            async with client.pipeline(transaction=True) as pipe:
                pipe.incrby("t:n", 2**40).incrbyfloat("t:f", 1.25)
                counted = await pipe.execute()
            entries = await client.xrange("t:stream")
            return await client.get("t:text"), entries[0][1][b"d"], counted
        finally:
            await client.aclose()
    text, blob, counted = asyncio.run(main())
    assert text == "h\u00e9llo".encode() and blob == b"\x00\xff" * 600 and counted == [2**40, 1.25]
